"""`spacesecrets ui`: the Secrets tab in the user's browser, a local web app like `kubectl proxy`.

Edge (cli). It serves on 127.0.0.1 only and acts with the user's own kubeconfig identity, so RBAC
and the admission policies decide every read and write exactly as for kubectl: no server in the
cluster, no new credential. `security` guards the server (a login token that signs one tab in
once, bearer sessions and no cookie, Host and Origin, headers), `api` is the JSON API over the
user's client, `server` serves it and the page in `static/`. Each printed address signs in once;
Enter in the terminal prints a new one. The server and the client are imported when the command
runs, so `--help` stays light.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import webbrowser
from collections.abc import Callable, Iterable
from typing import ClassVar, TextIO

import click

from spacesecrets.cli.app import UserError, _client, _namespace, main, namespaced


class Duration(click.ParamType[float]):
    """A duration of at least 10 seconds: 90s, 15m, 1h."""

    name = "duration"
    UNITS: ClassVar[dict[str, int]] = {"s": 1, "m": 60, "h": 3600}

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        match = re.fullmatch(r"(\d{1,6})([smh])", str(value).strip())
        seconds = int(match[1]) * self.UNITS[match[2]] if match else 0
        if seconds < 10:
            self.fail(f"{value!r} is not a duration of 10s or more (e.g. 90s, 15m, 1h)", param, ctx)
        return float(seconds)


@main.command()
@namespaced
@click.option(
    "--port", type=click.IntRange(0, 65535), default=0, help="Port (default: a free one)."
)
@click.option("--browser/--no-browser", default=True, help="Open the page in a browser.")
@click.option(
    "--idle-timeout",
    type=Duration(),
    default="15m",
    show_default=True,
    help="Sign a tab out after this long without your input (e.g. 90s, 15m, 1h).",
)
@click.pass_context
def ui(ctx: click.Context, port: int, browser: bool, idle_timeout: float) -> None:
    """The Secrets tab in a browser: keys, flows, history, Sync now (127.0.0.1 only).

    Prints an address with a random token: whoever opens it first acts as you, so keep it to
    yourself. It signs one browser tab in, once; press Enter for a new address. A tab left
    without your input for the idle timeout signs itself out. Values typed there are sealed on
    this machine and never sent back to the browser."""
    from spacesecrets.cli.ui.api import SpaceApi
    from spacesecrets.cli.ui.server import UiServer

    api = SpaceApi(_client(ctx), _namespace(ctx), ctx.obj["controller_namespace"])
    try:
        server = UiServer(api, port, idle_seconds=idle_timeout)
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
    interactive = _in_foreground(sys.stdin)
    click.echo(
        "Whoever opens this address first acts as you; it signs one browser tab in, once. "
        + ("Enter prints a new address. " if interactive else "")
        + "Ctrl+C stops it."
    )
    if interactive:
        threading.Thread(
            target=new_addresses,
            args=(sys.stdin, server.guard.new_login_url, click.echo, browser),
            daemon=True,  # Ctrl+C does not wait for a line
        ).start()
    if browser:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def new_addresses(
    lines: Iterable[str], new_url: Callable[[], str], echo: Callable[[str], None], browser: bool
) -> None:
    """A new login address for each line the user enters (a tab closed, another wanted): the
    previous address, if not used yet, no longer signs in. Ends with the input."""
    for _ in lines:
        url = new_url()
        echo(f"A new address (the one before no longer signs in): {url}")
        if browser:
            webbrowser.open(url)


def _in_foreground(stream: TextIO) -> bool:
    """A terminal this process may read from: never a pipe, a file or /dev/null, and not while
    in the background (a read there would stop the whole process)."""
    try:
        return stream.isatty() and os.tcgetpgrp(stream.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False
