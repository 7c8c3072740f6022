"""The `spacesecrets` command group and what every command shares: the user's kubeconfig identity,
the namespace they mean, the operator's public key, and one clear line for every user mistake.

Edge. User mistakes end in one clear line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from spacesecrets.core import crypto
from spacesecrets.names import PUBLIC_KEYS_CONFIGMAP


class UserError(click.ClickException):
    """One line for the user; exit 1."""


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        from spacesecrets import kube

        try:
            return super().invoke(ctx)
        except kube.NotFound as exc:
            raise UserError(f"not found: {exc}") from None
        except kube.AlreadyExists as exc:
            raise UserError(f"already exists: {exc}") from None
        except kube.Permanent as exc:
            raise UserError(str(exc)) from None
        except kube.Temporary as exc:
            raise UserError(f"the API server is not answering right now: {exc}") from None
        except (crypto.UnsealError, ValueError, OSError) as exc:
            raise UserError(str(exc)) from None


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
    from spacesecrets.kube.factory import kube_for

    try:
        return kube_for(ctx.obj["kubeconfig"])
    except Exception as exc:  # the kubernetes client raises many kinds for a bad config
        raise UserError(f"cannot load a kubeconfig: {exc}") from None


def _namespace(ctx: click.Context) -> str:
    if ctx.obj["namespace"]:
        return str(ctx.obj["namespace"])
    from spacesecrets.kube.factory import current_namespace

    return current_namespace(ctx.obj["kubeconfig"])


def _public_key(ctx: click.Context, cert: Path | None) -> tuple[Any, str]:
    if cert is not None:
        pem = cert.read_text()
        return crypto.load_public_key_pem(pem), pem
    return published_key(_client(ctx), ctx.obj["controller_namespace"])


def published_key(client: Any, controller_namespace: str) -> tuple[Any, str]:
    """The operator's current public key (and its PEM), as it publishes it for every user."""
    cm = client.get("ConfigMap", controller_namespace, PUBLIC_KEYS_CONFIGMAP)
    pem = (cm.get("data") or {}).get("current.pem", "")
    if not pem:
        raise UserError("the operator has not published a public key yet")
    return crypto.load_public_key_pem(pem), pem


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
