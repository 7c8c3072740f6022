"""The owners' commands against a space: set, unset, list, history, rollback, approve, sync,
status.

Edge: acts with the user's own kubeconfig identity, so RBAC and the admission policies decide
exactly as for kubectl. Values are sealed locally; the API server only ever sees ciphertext.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from spacesecrets import kube
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
from spacesecrets.core import crypto, sharding, versions
from spacesecrets.core.conditions import get_condition
from spacesecrets.names import FLOWS, ROLLBACK_ANNOTATION, SHARD_LABEL, SYNC_NOW


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


def sync_stamp(now: dt.datetime | None = None) -> str:
    """The value of a Sync now request: its time, RFC 3339 UTC with milliseconds."""
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def request_sync(client: Any, namespace: str, name: str) -> str:
    """Ask the operator to bring flow `name` to its space's current version now: set its Sync now
    annotation (only an owner may, once the space exists). The request's stamp: the flow's
    status.syncNow.requested equals it once the operator has handled it."""
    stamp = sync_stamp()
    client.patch_custom(FLOWS, namespace, name, {"metadata": {"annotations": {SYNC_NOW: stamp}}})
    return stamp


def _sync_outcome(flow: Mapping[str, Any], stamp: str) -> tuple[bool, str] | None:
    """Once the operator has handled the request `stamp` of `flow`: whether it is synced, and
    the line saying what it holds (None: not handled yet)."""
    status = flow.get("status") or {}
    handled = status.get("syncNow") or {}
    if handled.get("requested") != stamp:
        return None
    name = flow["metadata"]["name"]
    version = handled.get("version")
    holds = f"version {version}" if version is not None else "no version"
    cond = get_condition(status.get("conditions") or [], "Synced") or {}
    if cond.get("status") == "True":
        return True, f"flowsecretsync {name} synced now: holds {holds}"
    why = f"{cond.get('reason', 'Unknown')}: {cond.get('message', '')}"
    return False, f"flowsecretsync {name} not synced, holds {holds} ({why})"


@main.command()
@namespaced
@click.argument("flows", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Sync every FlowSecretSync of the space.")
@click.option("--wait/--no-wait", default=True, show_default=True)
@click.option("--timeout", default=60.0, show_default=True)
@click.pass_context
def sync(
    ctx: click.Context, flows: tuple[str, ...], all_: bool, wait: bool, timeout: float
) -> None:
    """Sync now: bring flows to the space's current version at once, as an owner.

    Sets the annotation spacesecrets.io/sync-now (only an owner may); the operator syncs the flow
    even if its autosync tick is far away, and records the request in status.syncNow. A flow that
    may not be synced (ApprovalRequired, TargetNotOwned, ...) keeps what it holds, and says why."""
    if bool(flows) == all_:
        raise UserError("name the flows to sync, or give --all")
    client, namespace = _client(ctx), _namespace(ctx)
    names = list(flows) or sorted(
        f["metadata"]["name"] for f in client.list_custom(FLOWS, namespace)
    )
    if not names:
        raise UserError(f"namespace {namespace} has no FlowSecretSync")
    asked = {name: request_sync(client, namespace, name) for name in names}
    if not wait:
        for name in names:
            click.echo(f"flowsecretsync {name}: sync requested")
        return
    refused = _await_syncs(client, namespace, asked, timeout)
    if refused:
        raise UserError(f"not synced: {', '.join(refused)}")


def _await_syncs(client: Any, namespace: str, asked: dict[str, str], timeout: float) -> list[str]:
    """Wait until the operator has handled each request, printing what each flow holds; the
    flows it could not sync."""
    refused: list[str] = []
    waiting = dict(asked)
    deadline = time.monotonic() + timeout
    while waiting:
        for name, stamp in list(waiting.items()):
            outcome = _sync_outcome(client.get_custom(FLOWS, namespace, name), stamp)
            if outcome is None:
                continue
            del waiting[name]
            synced, line = outcome
            click.echo(line)
            if not synced:
                refused.append(name)
        if waiting and time.monotonic() >= deadline:
            raise UserError(
                f"the operator did not handle the sync of {', '.join(waiting)} within "
                f"{timeout:.0f}s"
            )
        if waiting:
            time.sleep(0.5)
    return refused


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
    served = _served_by(client, ctx.obj["controller_namespace"], namespace)
    if served:
        click.echo(served)
    flows = client.list_custom("flowsecretsyncs", namespace)
    click.echo(_flow_table(flows, st.get("version")) if flows else "no FlowSecretSyncs")


def _served_by(client: Any, operator_namespace: str, namespace: str) -> str | None:
    """Which shard serves the space, from the shards' Leases (None when they can't be read)."""
    try:
        leases = client.list_leases(operator_namespace, SHARD_LABEL)
    except (kube.Permanent, kube.Temporary):
        return None  # an operator without shards, or a user not allowed to list them
    now = dt.datetime.now(dt.UTC)
    live: dict[str, sharding.View] = {}
    for lease in leases:
        spec = lease.get("spec") or {}
        try:
            renewed = dt.datetime.fromisoformat(str(spec["renewTime"]).replace("Z", "+00:00"))
        except (KeyError, ValueError):
            continue
        if renewed + dt.timedelta(seconds=int(spec.get("leaseDurationSeconds", 15))) > now:
            holder, view = sharding.published_view(lease)
            live[holder] = view
    if not live:
        return "served by  no live shard" if leases else None
    member, settled = sharding.who_serves(namespace, live)
    state = "" if settled else "  (handover in progress)"
    return f"served by  shard {member} of {len(live)}{state}"


if __name__ == "__main__":
    main()
