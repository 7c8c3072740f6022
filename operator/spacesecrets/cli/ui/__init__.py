"""`spacesecrets ui`: the Secrets tab in the user's browser, a local web app like `kubectl proxy`.

Edge (cli). It serves on 127.0.0.1 only and acts with the user's own kubeconfig identity, so RBAC
and the admission policies decide every read and write exactly as for kubectl: no server in the
cluster, no new credential. `security` guards the server (token, cookie, CSRF, Host, headers),
`api` is the JSON API over the user's client, `server` serves it and the page in `static/`.
The server and the client are imported when the command runs, so `--help` stays light.
"""

from __future__ import annotations

import logging
import sys
import webbrowser

import click

from spacesecrets.cli.app import UserError, _client, _namespace, main, namespaced


@main.command()
@namespaced
@click.option(
    "--port", type=click.IntRange(0, 65535), default=0, help="Port (default: a free one)."
)
@click.option("--browser/--no-browser", default=True, help="Open the page in a browser.")
@click.pass_context
def ui(ctx: click.Context, port: int, browser: bool) -> None:
    """The Secrets tab in a browser: keys, flows, history, Sync now (127.0.0.1 only).

    Prints an address with a random token: whoever opens it acts as you, so keep it to yourself.
    Values typed there are sealed on this machine and never sent back to the browser."""
    from spacesecrets.cli.ui.api import SpaceApi
    from spacesecrets.cli.ui.server import UiServer

    api = SpaceApi(_client(ctx), _namespace(ctx), ctx.obj["controller_namespace"])
    try:
        server = UiServer(api, port)
    except OSError as exc:
        raise UserError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("spacesecrets.ui")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    url = server.guard.login_url()
    click.echo(f"The Secrets tab, acting as {api.user or 'your kubeconfig user'}: {url}")
    click.echo("Whoever opens this address acts as you. Ctrl+C stops it.")
    if browser:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
