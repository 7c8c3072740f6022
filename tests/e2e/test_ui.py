"""The Secrets tab in a real Chromium (Debian's, driven by Playwright), against the real control
plane and the real operator, with `spacesecrets ui` running as a real process with each user's
own kubeconfig: owners add, edit, remove and roll back; flows get the values and Sync now brings
a waiting flow along; non-owners see the tab read-only; refusals show the API server's message;
bad input is refused before anything leaves the page; and no value ever comes back to the
browser, shows in the page or in the server's log.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from playwright.sync_api import Browser, Locator, Page, expect
from tests.support.space import Space
from tests.support.ui import UiProcess, chromium, open_space, screenshot, ui_process

from spacesecrets.devtools.dev import LocalCluster, wait_for
from spacesecrets.names import SYNC_NOW

OWNER = "alice@example.com"
EDITOR_ROLE = "ui-test-editor"  # RBAC to change our kinds, as a namespace's developers often get

expect.set_options(timeout=20_000)  # the operator makes each version; the page polls for it


def _secret(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def _flow(space: Space, name: str, **spec: object) -> None:
    space.cluster.cp.kubectl(
        "apply", "-f", "-", input=yaml.safe_dump(space.flow(name, f"{name}-secrets", **spec))
    )


def _wait_flow(space: Space, name: str, version: int, timeout: float = 30) -> dict:
    return dict(
        wait_for(
            f"flow {name} at version {version}",
            lambda: (
                (st := space.kube.get_custom("flowsecretsyncs", space.ns, name).get("status") or {})
                and st.get("syncedVersion") == version
                and st
            ),
            timeout,
        )
    )


def _bind(space: Space, user: str, role: str, name: str) -> None:
    space.cluster.cp.kubectl(
        "create", "rolebinding", name, "-n", space.ns, f"--clusterrole={role}", f"--user={user}"
    )


@pytest.fixture(scope="module")
def editor_role(cluster: LocalCluster) -> str:
    cluster.apply(
        [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": EDITOR_ROLE},
                "rules": [
                    {
                        "apiGroups": ["spacesecrets.io"],
                        "resources": ["spacesecrets", "flowsecretsyncs"],
                        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
                    }
                ],
            }
        ]
    )
    return EDITOR_ROLE


def _ui(space: Space, user: str, tmp_path: Path, *args: str) -> AbstractContextManager[UiProcess]:
    return ui_process(space.cluster.cp.kubeconfig_for(user), space.ns, tmp_path, *args)


def _add(page: Page, key: str, value: str, fmt: str = "Text") -> None:
    page.get_by_role("button", name="Add a secret").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("KEY", exact=True).fill(key)
    dialog.get_by_label(fmt, exact=True).check()
    dialog.get_by_label("VALUE", exact=True).fill(value)
    dialog.get_by_role("button", name="Confirm").click()


def _version(page: Page, version: int) -> None:
    expect(page.get_by_test_id("space-version")).to_have_text(str(version))
    expect(page.locator("#pending")).to_be_hidden()


def _key_row(page: Page, key: str) -> Locator:
    return page.locator("#key-rows tr").filter(has=page.get_by_text(key, exact=True))


def test_an_owner_adds_edits_removes_and_rolls_back_and_a_flow_gets_the_values(
    space: Space, browser: Browser, tmp_path: Path
) -> None:
    kept, host, edited = _secret("kept"), _secret("host"), _secret("edited")
    token = _secret("json-token")
    space.apply({"KEEP_ME": kept})
    space.wait_version(1)
    _flow(space, "orders")  # autosync 1m: 3 s for the shared operator
    _wait_flow(space, "orders", 1)
    with _ui(space, OWNER, tmp_path) as proc:
        page, rec, _ = open_space(browser, proc, space.ns)
        _version(page, 1)
        expect(_key_row(page, "KEEP_ME")).to_contain_text("text")

        _add(page, "PRODUCT_A_API_HOST", host)
        expect(page.locator("#toasts")).to_contain_text("PRODUCT_A_API_HOST added")
        _version(page, 2)
        _add(page, "PRODUCT_A_CONFIG", json.dumps({"retries": 3, "token": token}), "JSON")
        _version(page, 3)
        expect(_key_row(page, "PRODUCT_A_CONFIG")).to_contain_text("json")
        expect(_key_row(page, "PRODUCT_A_CONFIG")).to_contain_text("v3")

        page.get_by_role("button", name="Edit PRODUCT_A_API_HOST").click()
        expect(page.get_by_label("KEY", exact=True)).to_have_value("PRODUCT_A_API_HOST")
        page.get_by_label("VALUE", exact=True).fill(edited)
        page.get_by_role("button", name="Confirm").click()
        _version(page, 4)
        expect(_key_row(page, "PRODUCT_A_API_HOST")).to_contain_text("v4")

        page.get_by_role("button", name="Remove KEEP_ME").click()
        expect(page.get_by_role("dialog")).to_contain_text("Remove KEEP_ME?")
        page.get_by_role("button", name="Remove", exact=True).click()
        _version(page, 5)
        expect(_key_row(page, "KEEP_ME")).to_have_count(0)
        expect(page.locator("#toasts .toast")).to_have_count(0)  # they go by themselves
        screenshot(page, "secrets-tab")

        docs = wait_for(
            "the target at version 5",
            lambda: (
                (d := space.target_documents("orders-secrets"))["SECRETS_METADATA"]["version"] == 5
                and d
            ),
        )
        assert docs["SECRETS"] == {
            "PRODUCT_A_API_HOST": edited,
            "PRODUCT_A_CONFIG": {"retries": 3, "token": token},
        }
        page.get_by_role("tab", name="Flows").click()
        flow = page.locator("#flow-rows tr[data-flow=orders]")
        expect(flow).to_contain_text("v5")
        expect(flow).to_contain_text("Up to date")
        expect(flow).to_contain_text("orders-secrets")
        screenshot(page, "flows-tab")

        page.get_by_role("tab", name="History").click()
        v5 = page.locator("#history-rows tr").filter(has=page.get_by_text("v5", exact=True))
        expect(v5).to_contain_text("KEEP_ME")
        page.get_by_role("button", name="Roll back to version 2").click()
        page.get_by_role("button", name="Roll back", exact=True).click()
        _version(page, 6)
        v6 = page.locator("#history-rows tr").filter(has=page.get_by_text("v6", exact=True))
        expect(v6).to_contain_text("Rollback of v2")
        screenshot(page, "history-tab")
        page.get_by_role("tab", name="Secrets").click()
        expect(_key_row(page, "KEEP_ME")).to_have_count(1)
        expect(_key_row(page, "PRODUCT_A_CONFIG")).to_have_count(0)

        page.get_by_role("link", name="Spaces", exact=True).click()
        expect(page.locator("#spaces-note")).to_contain_text(f"showing namespace {space.ns}")
        space_row = page.locator("#spaces-rows tr").filter(has=page.get_by_text(space.ns))
        expect(space_row).to_contain_text("Ready")
        expect(space_row.locator("td").nth(0)).to_have_text("6")
        screenshot(page, "spaces")

        rec.assert_never_shown([kept, host, edited, token], proc)
        assert "hpke1:" not in b"".join(b for _, b in rec.bodies).decode(errors="replace")


def test_sync_now_brings_a_flow_waiting_for_its_tick_to_the_current_version(
    space: Space, browser: Browser, tmp_path: Path
) -> None:
    first, second = _secret("first"), _secret("second")
    space.apply({"API_HOST": first})
    space.wait_version(1)
    for name in ("waiting-a", "waiting-b"):  # a tick every 72 minutes for the shared operator
        _flow(space, name, autosync="24h", syncOnSave=False)
        _wait_flow(space, name, 1)
    space.apply({"API_HOST": second})
    space.wait_version(2)
    with _ui(space, OWNER, tmp_path) as proc:
        page, rec, _ = open_space(browser, proc, space.ns)
        page.get_by_role("tab", name="Flows").click()
        a, b = (page.locator(f"#flow-rows tr[data-flow={n}]") for n in ("waiting-a", "waiting-b"))
        expect(a).to_contain_text("1 behind")
        expect(page.get_by_test_id("flow-version-waiting-a")).to_have_text("v1")
        page.get_by_role("button", name="Sync waiting-a now").click()
        expect(page.get_by_test_id("flow-version-waiting-a")).to_have_text("v2")
        expect(a).to_contain_text("Up to date")
        expect(page.get_by_test_id("flow-version-waiting-b")).to_have_text("v1")
        assert space.target_documents("waiting-a-secrets")["SECRETS"] == {"API_HOST": second}
        flow = space.kube.get_custom("flowsecretsyncs", space.ns, "waiting-a")
        requested = flow["metadata"]["annotations"][SYNC_NOW]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", requested)
        assert flow["status"]["syncNow"]["requested"] == requested
        assert flow["status"]["syncNow"]["version"] == 2

        page.get_by_role("button", name="Sync all now").click()
        expect(page.get_by_test_id("flow-version-waiting-b")).to_have_text("v2")
        expect(b).to_contain_text("Up to date")
        assert space.target_documents("waiting-b-secrets")["SECRETS"] == {"API_HOST": second}
        screenshot(page, "sync-now")
        rec.assert_never_shown([first, second], proc)


def test_a_non_owner_sees_the_tab_read_only_with_the_reason(
    space: Space, browser: Browser, tmp_path: Path, editor_role: str
) -> None:
    value = _secret("value")
    space.apply({"API_HOST": value})
    space.wait_version(1)
    _flow(space, "orders")
    _wait_flow(space, "orders", 1)
    _bind(space, "vic@example.com", "view", "vic-views")
    _bind(space, "carol@example.com", editor_role, "carol-edits")
    reasons = {
        "vic@example.com": "permissions do not let vic@example.com change SpaceSecrets",
        "carol@example.com": f"carol@example.com is not an owner of space {space.ns}",
    }
    for user, reason in reasons.items():
        with _ui(space, user, tmp_path) as proc:
            page, rec, context = open_space(browser, proc, space.ns)
            _version(page, 1)
            expect(page.locator("#readonly")).to_contain_text("Read-only")
            expect(page.locator("#readonly")).to_contain_text(reason)
            expect(_key_row(page, "API_HOST")).to_contain_text("text")
            expect(page.get_by_role("button", name="Add a secret")).to_be_hidden()
            expect(page.get_by_role("button", name="Edit API_HOST")).to_have_count(0)
            page.get_by_role("tab", name="Flows").click()
            expect(page.locator("#flow-rows tr[data-flow=orders]")).to_contain_text("v1")
            expect(page.get_by_role("button", name=re.compile("Sync"))).to_have_count(0)
            page.get_by_role("tab", name="History").click()
            expect(page.get_by_role("button", name=re.compile("Roll back"))).to_have_count(0)
            page.get_by_role("tab", name="Secrets").click()
            screenshot(page, f"read-only-{user.split('@')[0]}")
            assert rec.writes() == []
            rec.assert_never_shown([value], proc)
            context.close()


def test_a_write_the_api_server_refuses_shows_its_message(
    space: Space, browser: Browser, tmp_path: Path, editor_role: str
) -> None:
    """Bob's page offered the form while he was an owner; by the time he confirms he is not one
    any more. His RBAC still allows the update: the admission policy refuses it, and the page
    shows the API server's own words."""
    value = _secret("refused")
    bob = "bob@example.com"
    space.owners = [{"kind": "User", "name": OWNER}, {"kind": "User", "name": bob}]
    space.apply({"API_HOST": _secret("host")})
    space.wait_version(1)
    _bind(space, bob, editor_role, "bob-edits")
    with _ui(space, bob, tmp_path) as proc:
        page, rec, _ = open_space(browser, proc, space.ns)
        _version(page, 1)
        expect(page.locator("#readonly")).to_be_hidden()
        page.get_by_role("button", name="Add a secret").click()
        space.cluster.cp.kubectl(
            "patch",
            "spacesecrets",
            space.name,
            "-n",
            space.ns,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"owners": [{"kind": "User", "name": OWNER}]}}),
        )
        dialog = page.get_by_role("dialog")
        dialog.get_by_label("KEY", exact=True).fill("NEW_KEY")
        dialog.get_by_label("VALUE", exact=True).fill(value)
        dialog.get_by_role("button", name="Confirm").click()
        error = page.locator("#key-server-error")
        expect(error).to_contain_text(f"only owners of space {space.ns}")
        expect(error).to_contain_text(f"User {OWNER}")
        expect(page.get_by_role("dialog")).to_be_visible()
        screenshot(page, "refused-write")
        assert "NEW_KEY" not in (space.get().get("spec") or {}).get("data", {})
        assert [m for m, _ in rec.writes()] == ["POST"]
        page.get_by_role("button", name="Cancel").click()
        rec.assert_never_shown([value], proc)


def test_a_bad_key_or_bad_json_is_refused_before_anything_is_sent(
    space: Space, browser: Browser, tmp_path: Path
) -> None:
    value = _secret("typed")
    space.apply({"API_HOST": _secret("host")})
    space.wait_version(1)
    with _ui(space, OWNER, tmp_path) as proc:
        page, rec, _ = open_space(browser, proc, space.ns)
        _version(page, 1)
        page.get_by_role("button", name="Add a secret").click()
        dialog = page.get_by_role("dialog")
        key, val = dialog.get_by_label("KEY", exact=True), dialog.get_by_label("VALUE", exact=True)
        confirm = dialog.get_by_role("button", name="Confirm")

        for bad in ("1_STARTS_WITH_A_DIGIT", "HAS-A-DASH", "A" * 129, "ÜMLAUT"):
            key.fill(bad)
            expect(key).to_have_attribute("aria-invalid", "true")  # as the user types
            expect(dialog.locator("#key-error")).not_to_be_empty()
            val.fill(value)
            confirm.click()
            expect(dialog).to_be_visible()
        key.fill("GOOD_KEY")
        expect(key).to_have_attribute("aria-invalid", "false")
        dialog.get_by_label("JSON", exact=True).check()
        for bad in ('{"a": 1', "{'a': 1}", "NaN", "[" * 33 + "]" * 33, f"not json {value}"):
            val.fill(bad)
            expect(val).to_have_attribute("aria-invalid", "true")
            confirm.click()
            expect(dialog.locator("#value-error")).not_to_be_empty()
            expect(dialog).to_be_visible()
        screenshot(page, "invalid-input")
        assert rec.writes() == [], "a request left the page"

        # the recorder does see a write: a good one goes out, once
        val.fill(json.dumps({"ok": True, "note": value}))
        expect(val).to_have_attribute("aria-invalid", "false")
        confirm.click()
        _version(page, 2)
        assert [m for m, _ in rec.writes()] == ["POST"]
        rec.assert_never_shown([value], proc)


def test_the_session_lives_in_the_tab_only_and_the_address_signs_in_once(
    space: Space, browser: Browser, tmp_path: Path
) -> None:
    """No cookie: the session comes in the redirect's fragment, leaves the address bar at once,
    stays in this tab's sessionStorage (a reload keeps it) and goes out only as a bearer token.
    Another tab of the same browser is not signed in, and the printed address is used up."""
    space.apply({"API_HOST": _secret("host")})
    space.wait_version(1)
    with _ui(space, OWNER, tmp_path) as proc:
        page, rec, context = open_space(browser, proc, space.ns)
        _version(page, 1)
        stored = page.evaluate("sessionStorage.getItem('spacesecrets-session')")
        assert stored and re.fullmatch(r"[A-Za-z0-9_-]{43}", stored)
        assert "session" not in page.url and "token" not in page.url
        assert context.cookies() == []
        sent: list[dict[str, str]] = []
        page.on("request", lambda r: sent.append(r.headers) if "/api/" in r.url else None)
        page.reload()
        _version(page, 1)
        assert sent and all(h.get("authorization") == f"Bearer {stored}" for h in sent)
        assert all("cookie" not in h for h in sent)

        origin = f"http://{urlsplit(proc.url).netloc}"
        other = context.new_page()
        other.goto(f"{origin}/#/space/{space.ns}")
        expect(other.locator("#view-signin")).to_be_visible()
        expect(other.locator("#view-signin")).to_contain_text("spacesecrets ui printed")
        expect(other.locator("#view-space")).to_be_hidden()
        screenshot(other, "sign-in")

        again = context.new_page()
        answer = again.goto(proc.url)
        assert answer is not None and answer.status == 403
        expect(again.locator("body")).to_contain_text("signs in once")
        assert context.cookies() == []
        assert rec.writes() == []
        context.close()


def test_a_tab_left_without_input_signs_itself_out(
    space: Space, browser: Browser, tmp_path: Path
) -> None:
    """A tab left open on an unattended desk must stop acting as the user: its own polls are
    not input, so after the idle timeout it signs out, says why, and its session is refused by
    the server from then on (a copy of it signs no one in)."""
    space.apply({"API_HOST": _secret("host")})
    space.wait_version(1)
    with _ui(space, OWNER, tmp_path, "--idle-timeout", "10s") as proc:
        page, rec, context = open_space(browser, proc, space.ns)
        _version(page, 1)
        stored = page.evaluate("sessionStorage.getItem('spacesecrets-session')")
        reason = page.locator("#signin-reason")
        expect(reason).to_contain_text("Signed out after 10 s without input", timeout=20_000)
        expect(page.locator("#view-signin")).to_be_visible()
        expect(page.locator("#view-space")).to_be_hidden()
        assert page.evaluate("sessionStorage.getItem('spacesecrets-session')") is None
        answer = context.request.get(
            f"http://{urlsplit(proc.url).netloc}/api/spaces",
            headers={"Authorization": f"Bearer {stored}"},
        )
        assert answer.status == 401 and answer.json()["ended"] is True
        assert [urlsplit(url).path for _, url in rec.writes()] == ["/api/session/sign-out"]
        context.close()
