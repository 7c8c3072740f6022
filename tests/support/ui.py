"""`spacesecrets ui` as a user runs it (a real process with their kubeconfig), and a real Chromium
driven by Playwright that records every request the page sends and every body it receives."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Error, Page, Request, Response, sync_playwright

from spacesecrets.devtools.dev import wait_for

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (`make chromium`); never a download
ADDRESS = re.compile(r"(http://127\.0\.0\.1:\d+/login\?token=[A-Za-z0-9_-]{43})\n")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "ui-screenshots"


@dataclass
class UiProcess:
    """`python -m spacesecrets ui --no-browser`, its stdout and stderr in one log file."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


@contextmanager
def ui_process(kubeconfig: Path, namespace: str, workdir: Path, *args: str) -> Iterator[UiProcess]:
    log_path = workdir / f"ui-{kubeconfig.stem}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "spacesecrets", "ui", "--no-browser", "-n", namespace, *args],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    proc = UiProcess(popen, log_path)
    try:
        proc.url = wait_for(
            "the ui's address",
            lambda: (
                # the whole line, newline and all: the log may be read while it is written
                ((found := ADDRESS.search(proc.log_text())) and found[1])
                or (popen.poll() is not None and _exited(proc))
            ),
            timeout=30,
        )
        yield proc
    finally:
        proc.stop()


def _exited(proc: UiProcess) -> None:
    raise AssertionError(f"spacesecrets ui exited: {proc.log_text()}")


@contextmanager
def chromium() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "Debian's chromium is not installed: run `make chromium`"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            # Chromium's sandbox needs user namespaces it cannot have as root in a container;
            # the pages it opens here are our own, on loopback.
            args=["--no-sandbox"] if os.geteuid() == 0 else [],
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Recorder:
    """Every request a page sends (method, URL) and every response body it is sent."""

    page: Page
    requests: list[tuple[str, str]] = field(default_factory=list)
    bodies: list[tuple[str, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("request", self._request)
        self.page.on("response", self._response)

    def _request(self, request: Request) -> None:
        self.requests.append((request.method, request.url))

    def _response(self, response: Response) -> None:
        try:
            body = response.body()
        except Error:  # a redirect has none
            body = b""
        self.bodies.append((response.url, body))

    def writes(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[0] not in ("GET", "HEAD")]

    def assert_never_shown(self, values: list[str], proc: UiProcess) -> None:
        """None of `values` in any body the browser got, in the page, or in the server's log."""
        # the recorder is not blind: it holds the page's API answers, with their key names
        assert any(b'"keys"' in body for url, body in self.bodies if "/api/spaces/" in url)
        for value in values:
            for url, body in self.bodies:
                assert value.encode() not in body, f"a value came back in {url}"
            assert value not in self.page.content(), "a value is in the page"
            assert value not in proc.log_text(), "a value is in the server's log"


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def open_space(browser: Browser, proc: UiProcess, namespace: str) -> tuple[Page, Recorder, Any]:
    """A fresh browser context signed in with the printed address, on the space's page."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    recorder = Recorder(page)
    page.goto(proc.url)
    page.get_by_role("link", name=namespace, exact=True).click()
    return page, recorder, context
