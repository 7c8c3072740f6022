"""The owners' commands against a space: set, unset, list, history, rollback, approve, status.

Edge: acts with the user's own kubeconfig identity, so RBAC and the admission policies decide
exactly as for kubectl. Values are sealed locally; the API server only ever sees ciphertext.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from spacesecrets.cli.app import (
    UserError,
    _client,
    _current_space,
    _namespace,
    _public_key,
    main,
    namespaced,
)
from spacesecrets.cli.values import _check_key
from spacesecrets.core import crypto, versions
from spacesecrets.names import ROLLBACK_ANNOTATION


@main.command(name="set")
@namespaced
@click.argument("key")
@click.option(
    "--from-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the value from this file (default: stdin).",
)
@click.option("--json", "as_json", is_flag=True, help="The value is a JSON document.")
@click.pass_context
def set_(ctx: click.Context, key: str, from_file: Path | None, as_json: bool) -> None:
    """Set KEY to a value read from stdin or a file (sealed before it leaves this machine)."""
    key = _check_key(key)
    data = from_file.read_bytes() if from_file else sys.stdin.buffer.read()
    if not from_file and data.endswith(b"\n") and not as_json:
        data = data[:-1]  # `echo value | spacesecrets set KEY` means "value"
    fmt = "json" if as_json else "text"
    if as_json:
        try:
            text = data.decode()
        except UnicodeDecodeError:  # its message quotes a byte of the value
            raise UserError(f"{key} is not UTF-8 text") from None
        versions.check_json(key, text)
    client, namespace, space = _current_space(ctx)
    pub, _ = _public_key(ctx, None)
    sealed = crypto.seal(pub, namespace, key, fmt, data)
    # A merge patch of this one key: a concurrent change of another key by another owner is kept.
    client.patch_custom(
        "spacesecrets",
        namespace,
        space["metadata"]["name"],
        {"spec": {"data": {key: {"format": fmt, "sealed": sealed}}}},
    )
    click.echo(f"{key} set in space {namespace}; the operator creates the new version")


@main.command()
@namespaced
@click.argument("key")
@click.pass_context
def unset(ctx: click.Context, key: str) -> None:
    """Remove KEY from the space."""
    client, namespace, space = _current_space(ctx)
    if key not in (space.get("spec") or {}).get("data", {}):
        raise UserError(f"space {namespace} has no key {key}")
    client.patch_custom(
        "spacesecrets", namespace, space["metadata"]["name"], {"spec": {"data": {key: None}}}
    )
    click.echo(f"{key} removed from space {namespace}")


def _table(rows: Sequence[Sequence[Any]]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _ready(status: Mapping[str, Any], type_: str) -> str:
    for cond in status.get("conditions") or []:
        if cond.get("type") == type_:
            return f"{cond.get('status')} ({cond.get('reason')})"
    return "Unknown"


@main.command(name="list")
@namespaced
@click.pass_context
def list_(ctx: click.Context) -> None:
    """The space's keys with version and dates (never values), and what each flow was issued."""
    client, namespace, space = _current_space(ctx)
    status = space.get("status") or {}
    click.echo(
        f"space {namespace}  version {status.get('version', '-')}  "
        f"created {status.get('createdAt', '-')}  updated {status.get('updatedAt', '-')}  "
        f"ready {_ready(status, 'Ready')}"
    )
    keys = status.get("keys") or []
    if keys:
        click.echo()
        click.echo(
            _table(
                [("KEY", "FORMAT", "VERSION", "UPDATED")]
                + [(k["name"], k["format"], k["version"], k["updatedAt"]) for k in keys]
            )
        )
    flows = client.list_custom("flowsecretsyncs", namespace)
    if flows:
        click.echo()
        click.echo(_flow_table(flows, status.get("version")))


def _flow_table(flows: list[dict[str, Any]], version: Any) -> str:
    rows: list[tuple[Any, ...]] = [("FLOW", "TARGET", "VERSION", "BEHIND", "ISSUED", "SYNCED")]
    for f in sorted(flows, key=lambda f: f["metadata"]["name"]):
        st = f.get("status") or {}
        synced = st.get("syncedVersion")
        behind = (int(version) - int(synced)) if version is not None and synced is not None else "-"
        rows.append(
            (
                f["metadata"]["name"],
                f["spec"]["target"]["name"],
                synced if synced is not None else "-",
                behind,
                st.get("issuedAt", "-"),
                _ready(st, "Synced"),
            )
        )
    return _table(rows)


@main.command()
@namespaced
@click.pass_context
def history(ctx: click.Context) -> None:
    """Versions of the space: what each added, changed and removed (key names only)."""
    status = _current_space(ctx)[2].get("status") or {}
    rows: list[tuple[Any, ...]] = [("VERSION", "AT", "ADDED", "CHANGED", "REMOVED", "NOTE")]
    for h in status.get("history") or []:
        note = f"rollback of {h['rollbackOf']}" if h.get("rollbackOf") else ""
        rows.append(
            (
                h["version"],
                h["at"],
                ",".join(h.get("added") or []) or "-",
                ",".join(h.get("changed") or []) or "-",
                ",".join(h.get("removed") or []) or "-",
                note,
            )
        )
    click.echo(_table(rows))


@main.command()
@namespaced
@click.option("--to", "to", type=int, required=True, help="The version to restore.")
@click.option("--wait/--no-wait", default=True, show_default=True)
@click.option("--timeout", default=60.0, show_default=True)
@click.pass_context
def rollback(ctx: click.Context, to: int, wait: bool, timeout: float) -> None:
    """Restore version N as a new version."""
    client, namespace, space = _current_space(ctx)
    kept = [h["version"] for h in (space.get("status") or {}).get("history") or []]
    if kept and to not in kept:
        raise UserError(f"version {to} is not in the history of {namespace} (kept: {kept})")
    before = (space.get("status") or {}).get("version") or 0
    name = space["metadata"]["name"]
    client.patch_custom(
        "spacesecrets",
        namespace,
        name,
        {"metadata": {"annotations": {ROLLBACK_ANNOTATION: str(to)}}},
    )
    if not wait:
        click.echo(f"rollback of {namespace} to version {to} requested")
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = client.get_custom("spacesecrets", namespace, name)
        status = current.get("status") or {}
        latest = (status.get("history") or [{}])[0]
        if (status.get("version") or 0) > before and latest.get("rollbackOf") == to:
            click.echo(f"version {to} restored as version {status['version']}")
            return
        if ROLLBACK_ANNOTATION not in (
            current["metadata"].get("annotations") or {}
        ) and "RollbackFailed" in _ready(status, "Rollback"):
            raise UserError(f"rollback failed: {_message(status, 'Rollback')}")
        time.sleep(0.5)
    raise UserError(f"the operator did not restore version {to} within {timeout:.0f}s")


@main.command()
@namespaced
@click.argument("flows", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Approve every FlowSecretSync of the space.")
@click.pass_context
def approve(ctx: click.Context, flows: tuple[str, ...], all_: bool) -> None:
    """Approve flows as an owner, so that they are handed the space's secrets.

    A flow gets secrets only if a current owner of the space created it, last changed its spec,
    or approved it. The API server records who did (the annotation spacesecrets.io/authorized-by):
    approving sets spacesecrets.io/approve, which only an owner may do once the space exists."""
    from spacesecrets.core.provenance import APPROVE, AUTHORIZED_BY, Identity

    if bool(flows) == all_:
        raise UserError("name the flows to approve, or give --all")
    client, namespace = _client(ctx), _namespace(ctx)
    names = list(flows) or [
        f["metadata"]["name"] for f in client.list_custom("flowsecretsyncs", namespace)
    ]
    if not names:
        raise UserError(f"namespace {namespace} has no FlowSecretSync")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for name in names:
        done = client.patch_custom(
            "flowsecretsyncs", namespace, name, {"metadata": {"annotations": {APPROVE: stamp}}}
        )
        who = Identity.parse((done["metadata"].get("annotations") or {}).get(AUTHORIZED_BY))
        click.echo(f"flowsecretsync {name} approved by {who.user if who else 'unknown'}")


def _message(status: Mapping[str, Any], type_: str = "Ready") -> str:
    for cond in status.get("conditions") or []:
        if cond.get("type") == type_:
            return str(cond.get("message", ""))
    return ""


@main.command()
@namespaced
@click.pass_context
def status(ctx: click.Context) -> None:
    """Flows of the space: the version each holds, how far behind, when issued."""
    client, namespace, space = _current_space(ctx)
    st = space.get("status") or {}
    click.echo(f"space {namespace}  version {st.get('version', '-')}  ready {_ready(st, 'Ready')}")
    flows = client.list_custom("flowsecretsyncs", namespace)
    click.echo(_flow_table(flows, st.get("version")) if flows else "no FlowSecretSyncs")


if __name__ == "__main__":
    main()
