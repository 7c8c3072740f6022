"""The `spacesecrets` command (also `kubectl spacesecrets`): the operator, the local dev cluster,
and the owners' tools (pubkey, seal, set, unset, list, history, rollback, status).

Edge. User mistakes end in one clear line on stderr and a non-zero exit, never a traceback.
Values are read from stdin or files and sealed locally: no plaintext ever goes to the API server.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml

from spacesecrets import API_VERSION
from spacesecrets.core import crypto, versions
from spacesecrets.reconcile import ROLLBACK_ANNOTATION

EXIT_USAGE = 2


class UserError(click.ClickException):
    """One line for the user; exit 1."""


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        from spacesecrets import kube

        try:
            return super().invoke(ctx)
        except kube.NotFound as exc:
            raise UserError(f"not found: {exc}") from None
        except kube.Permanent as exc:
            raise UserError(_api_message(exc)) from None
        except kube.Temporary as exc:
            raise UserError(f"the API server is not answering right now: {exc}") from None
        except (crypto.UnsealError, ValueError, OSError) as exc:
            raise UserError(str(exc)) from None


def _api_message(exc: Exception) -> str:
    return str(exc)


@click.group(cls=_Group)
@click.option("--kubeconfig", envvar="KUBECONFIG", help="Path to a kubeconfig.")
@click.option("-n", "--namespace", help="The space (namespace); default: the context's.")
@click.option(
    "--controller-namespace",
    envvar="SPACESECRETS_NAMESPACE",
    default="spacesecrets-system",
    show_default=True,
    help="Where the operator keeps its keys.",
)
@click.pass_context
def main(
    ctx: click.Context, kubeconfig: str | None, namespace: str | None, controller_namespace: str
) -> None:
    """Versioned, owner-managed, encrypted secrets for each space (namespace)."""
    ctx.obj = {
        "kubeconfig": kubeconfig,
        "namespace": namespace,
        "controller_namespace": controller_namespace,
    }
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig


# -- operator ------------------------------------------------------------------------------------


@main.command()
@click.option(
    "--namespace-only", "watch", multiple=True, help="Serve only these namespaces (default: all)."
)
@click.option("--verbose", is_flag=True, help="Debug logging (never includes values).")
@click.pass_context
def operator(ctx: click.Context, watch: Sequence[str], verbose: bool) -> None:
    """Run the operator (kopf)."""
    import asyncio

    # kopf imports the official client whenever it is installed, only to recognise its model
    # objects, which spacesecrets never hands it; refusing the import keeps 58 MiB out of the
    # operator. kopf then logs in with its own kubeconfig and ServiceAccount readers.
    sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]
    import kopf

    from spacesecrets import handlers  # noqa: F401 -- registers the handlers
    from spacesecrets.core.settings import Settings

    settings = Settings.from_env()
    namespaces = list(watch) or list(settings.watch_namespaces)
    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if settings.log_json else kopf.LogFormat.PLAIN,
        log_prefix=False,
    )
    liveness = f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None
    asyncio.run(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=not settings.peering,
            peering_name=settings.peering or None,
            liveness_endpoint=liveness,
        )
    )


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
def crds(out: Path, chart_crds: Path, chart_templates: Path) -> None:
    """Write the CRDs, ClusterRoles and admission policies generated from the models."""
    from spacesecrets.schema import crdgen

    for path in crdgen.write(out, chart_crds, chart_templates):
        click.echo(str(path))


@main.command()
@click.option("--demo", is_flag=True, help="Run the demo end to end, then tear down.")
@click.option("--workdir", type=click.Path(path_type=Path), default=None)
def dev(demo: bool, workdir: Path | None) -> None:
    """A local control plane with the operator, in the foreground (Ctrl-C stops everything)."""
    from spacesecrets.devtools import dev as devmod

    sys.exit(devmod.run_demo() if demo else devmod.run_dev())


# -- keys ----------------------------------------------------------------------------------------


F = TypeVar("F", bound=Callable[..., Any])


def namespaced(fn: F) -> F:
    """`-n/--namespace` after the command too (`spacesecrets list -n team-a`), as with kubectl."""

    def remember(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
        if value:
            ctx.ensure_object(dict)["namespace"] = value

    option = click.option(
        "-n",
        "--namespace",
        "namespace_",
        expose_value=False,
        callback=remember,
        help="The space (namespace).",
    )
    return option(fn)


def _client(ctx: click.Context) -> Any:
    from spacesecrets import kube

    try:
        return kube.Kube(kube.make_client(ctx.obj["kubeconfig"]))
    except Exception as exc:  # the kubernetes client raises many kinds for a bad config
        raise UserError(f"cannot load a kubeconfig: {exc}") from None


def _namespace(ctx: click.Context) -> str:
    if ctx.obj["namespace"]:
        return str(ctx.obj["namespace"])
    import kubernetes

    try:
        _, active = kubernetes.config.list_kube_config_contexts(ctx.obj["kubeconfig"])
        return str(active.get("context", {}).get("namespace") or "default")
    except Exception:
        return "default"


def _public_key(ctx: click.Context, cert: Path | None) -> tuple[Any, str]:
    if cert is not None:
        pem = cert.read_text()
    else:
        cm = _client(ctx).get(
            "ConfigMap", ctx.obj["controller_namespace"], "spacesecrets-public-keys"
        )
        pem = (cm.get("data") or {}).get("current.pem", "")
        if not pem:
            raise UserError("the operator has not published a public key yet")
    key = crypto.load_public_key_pem(pem)
    return key, pem


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


MAX_INPUT_CHARS = 4 * 1024 * 1024


class _AliasError(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _PlainLoader(yaml.SafeLoader):
    """Safe YAML without aliases: values are plain data, and an alias bomb ("billion laughs")
    would otherwise expand when the value is written out as JSON."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):  # type: ignore[no-untyped-call]
            raise _AliasError(self.peek_event().start_mark.line + 1)  # type: ignore[no-untyped-call]
        return super().compose_node(parent, index)


def parse_values(text: str, filename: str) -> dict[str, tuple[str, bytes]]:
    """Plain values in: a YAML mapping (strings and dates are text, anything else JSON; or
    {format, value}) or a .env file (KEY=VALUE, text)."""
    if filename.endswith(".env") or filename == ".env":
        return _parse_env(text, filename)
    if len(text) > MAX_INPUT_CHARS:
        raise ValueError(f"{filename} is over {MAX_INPUT_CHARS} characters")
    try:
        doc = yaml.load(text, Loader=_PlainLoader)  # noqa: S506 -- a SafeLoader, aliases refused
    except _AliasError as exc:
        raise ValueError(f"{filename} uses a YAML alias at line {exc.line}: not accepted") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ValueError(f"{filename} is not valid YAML{where}") from None
    except RecursionError:
        raise ValueError(f"{filename} is nested too deeply") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{filename} must be a mapping of KEY: value")
    out: dict[str, tuple[str, bytes]] = {}
    for raw_key, value in doc.items():
        key = _check_key(str(raw_key))
        if isinstance(value, dict) and set(value) == {"format", "value"}:
            fmt = str(value["format"])
            if fmt not in ("text", "json"):
                raise ValueError(f"{key}: format must be text or json")
            raw = value["value"]
            if fmt == "json":
                data = raw if isinstance(raw, str) else _json_text(key, raw)
                versions.check_json(key, data)
            else:
                data = _text(key, raw)
            out[key] = (fmt, data.encode())
        elif isinstance(value, str | dt.date):
            out[key] = ("text", _text(key, value).encode())
        else:
            data = _json_text(key, value)
            versions.check_json(key, data)
            out[key] = ("json", data.encode())
    return out


def _parse_env(text: str, filename: str) -> dict[str, tuple[str, bytes]]:
    out: dict[str, tuple[str, bytes]] = {}
    for n, raw_line in enumerate(text.splitlines(), 1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{filename}:{n}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[_check_key(key.strip())] = ("text", value.encode())
    return out


def _text(key: str, value: Any) -> str:
    """A YAML scalar as a text value: a date or timestamp as its ISO 8601 text."""
    if isinstance(value, dt.date):  # a datetime is a date too
        return value.isoformat()
    if isinstance(value, bytes | set):
        raise ValueError(f"{key}: {_not_json(value)}")
    return str(value)


def _json_text(key: str, value: Any) -> str:
    """A YAML value as JSON text. Dates and timestamps, wherever they are, become ISO 8601
    strings; types JSON has no form for are refused naming the key. NaN and Infinity are
    written out as such, for `versions.check_json` to refuse with the message it gives in the
    operator."""
    try:
        return json.dumps(_json_data(key, value))
    except RecursionError:  # the YAML loader bounds the depth; this is the last guard
        raise versions.JSONValueError(key, "nests too deeply") from None


def _json_data(key: str, value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {_json_key(key, k): _json_data(key, v) for k, v in value.items()}
    if isinstance(value, list | tuple):  # !!omap and !!pairs load as lists of tuples
        return [_json_data(key, v) for v in value]
    if value is None or isinstance(value, str | int | float):  # bool is an int
        return value
    raise ValueError(f"{key}: {_not_json(value)}")


def _json_key(key: str, name: Any) -> Any:
    if isinstance(name, dt.date):
        return name.isoformat()
    if name is None or isinstance(name, str | int | float):  # json.dumps writes these as text
        return name
    raise ValueError(f"{key}: {_not_json(name)} (as a mapping key)")


def _not_json(value: Any) -> str:
    """Why a YAML value cannot be sealed; names the type, never the value."""
    if isinstance(value, bytes):
        return "a YAML !!binary value cannot be sealed; give binary data as base64 text"
    if isinstance(value, set | frozenset):
        return "a YAML !!set cannot be sealed; use a list"
    return f"a YAML value of type {type(value).__name__} cannot be sealed"


def _check_key(key: str) -> str:
    import re

    from spacesecrets.schema import models  # pydantic: loaded by the commands that need it only

    if not re.match(models.KEY_PATTERN, key) or len(key) > models.KEY_MAX_LENGTH:
        raise ValueError(
            f"{key!r} is not a valid KEY: use letters, digits and underscores, "
            "not starting with a digit (e.g. PRODUCT_A_API_HOST)"
        )
    return key


def _parse_owner(text: str) -> dict[str, str]:
    kind, sep, name = text.partition(":")
    if not sep or kind not in ("User", "Group", "ServiceAccount") or not name:
        raise ValueError(
            f"--owner {text!r}: use Kind:name with Kind User, Group or "
            "ServiceAccount, e.g. User:alice@example.com"
        )
    return {"kind": kind, "name": name}


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


# -- owners' commands against the cluster --------------------------------------------------------


def _space(ctx: click.Context, client: Any, namespace: str) -> dict[str, Any]:
    items = client.list_custom("spacesecrets", namespace)
    if not items:
        raise UserError(
            f"namespace {namespace} has no SpaceSecrets; create one with "
            "'spacesecrets seal ... | kubectl apply -f -'"
        )
    items.sort(key=lambda i: (i["metadata"]["creationTimestamp"], i["metadata"]["name"]))
    return dict(items[0])


def _current_space(ctx: click.Context) -> tuple[Any, str, dict[str, Any]]:
    """The client, the namespace the user means, and that namespace's SpaceSecrets."""
    client = _client(ctx)
    namespace = _namespace(ctx)
    return client, namespace, _space(ctx, client, namespace)


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
