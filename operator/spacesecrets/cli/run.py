"""Running things: the operator itself, the local development cluster, and the generated manifests.

Edge. Each command imports what it runs only when it runs, so `--help` and the owners' commands
never load the operator, kopf or pydantic.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

from spacesecrets.cli.app import main


@main.command()
@click.option(
    "--namespace-only", "watch", multiple=True, help="Serve only these namespaces (default: all)."
)
@click.option("--verbose", is_flag=True, help="Debug logging (never includes values).")
@click.pass_context
def operator(ctx: click.Context, watch: Sequence[str], verbose: bool) -> None:
    """Run the operator (kopf)."""
    # kopf imports the official client whenever it is installed, only to recognise its model
    # objects, which spacesecrets never hands it; refusing the import keeps 58 MiB out of the
    # operator. kopf then logs in with its own kubeconfig and ServiceAccount readers.
    sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]
    from spacesecrets import handlers

    handlers.run(tuple(watch), verbose)


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("crds"), show_default=True)
@click.option(
    "--chart-crds",
    type=click.Path(path_type=Path),
    default=Path("charts/spacesecrets/crds"),
    show_default=True,
)
@click.option(
    "--chart-templates",
    type=click.Path(path_type=Path),
    default=Path("charts/spacesecrets/templates"),
    show_default=True,
)
@click.option(
    "--node-red",
    type=click.Path(path_type=Path),
    default=Path("clients/node-red"),
    show_default=True,
)
def crds(out: Path, chart_crds: Path, chart_templates: Path, node_red: Path) -> None:
    """Write the CRDs, ClusterRoles and admission policies generated from the models, and the
    Node-RED node's copy of the autosync table."""
    from spacesecrets.schema import crdgen

    for path in crdgen.write(out, chart_crds, chart_templates, node_red):
        click.echo(str(path))


@main.command()
@click.option("--demo", is_flag=True, help="Run the demo end to end, then tear down.")
@click.option("--workdir", type=click.Path(path_type=Path), default=None)
def dev(demo: bool, workdir: Path | None) -> None:
    """A local control plane with the operator, in the foreground (Ctrl-C stops everything)."""
    from spacesecrets.devtools import dev as devmod

    sys.exit(devmod.run_demo() if demo else devmod.run_dev())
