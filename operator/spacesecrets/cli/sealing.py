"""Sealing, offline or with the cluster's published key: `pubkey` and `seal` (plain values in,
SpaceSecrets YAML with only ciphertext out, like kubeseal).

Edge: reads the public key from a file or the cluster; values are sealed in this process.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import yaml

from spacesecrets import API_VERSION
from spacesecrets.cli.app import UserError, _namespace, _public_key, main, namespaced
from spacesecrets.cli.values import _parse_owner, parse_values
from spacesecrets.core import crypto


@main.command()
@click.option(
    "--cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the public key from this PEM file instead of the cluster.",
)
@click.pass_context
def pubkey(ctx: click.Context, cert: Path | None) -> None:
    """Print the operator's current public key (PEM); save it to seal offline."""
    key, pem = _public_key(ctx, cert)
    click.echo(f"# kid {crypto.kid_of(key)}", err=True)
    click.echo(pem.strip())


@main.command()
@namespaced
@click.argument("source", type=click.File("r"), default="-")
@click.option("--name", default="secrets", show_default=True, help="The SpaceSecrets name.")
@click.option("--owner", "owners", multiple=True, help="Kind:name, e.g. User:alice@example.com.")
@click.option(
    "--cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Seal offline with this public key file.",
)
@click.option(
    "--format",
    "input_format",
    type=click.Choice(["yaml", "env"]),
    default=None,
    help="Input format (default: by file name).",
)
@click.pass_context
def seal(
    ctx: click.Context,
    *,
    source: Any,
    name: str,
    owners: Sequence[str],
    cert: Path | None,
    input_format: str | None,
) -> None:
    """Plain values (YAML or .env) in, a sealed SpaceSecrets manifest out (safe to commit)."""
    namespace = _namespace(ctx)
    filename = (
        "x.env"
        if input_format == "env"
        else ("x.yaml" if input_format == "yaml" else str(getattr(source, "name", "<stdin>")))
    )
    values = parse_values(source.read(), filename)
    if not owners:
        raise UserError("name at least one owner with --owner Kind:name")
    key, _ = _public_key(ctx, cert)
    manifest = {
        "apiVersion": API_VERSION,
        "kind": "SpaceSecrets",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "owners": [_parse_owner(o) for o in owners],
            "data": {
                k: {"format": fmt, "sealed": crypto.seal(key, namespace, k, fmt, data)}
                for k, (fmt, data) in sorted(values.items())
            },
        },
    }
    click.echo(yaml.safe_dump(manifest, sort_keys=False, width=10_000), nl=False)
