"""The Secrets tab's JSON API with no cluster: the real `SpaceApi` and `Kube` over a transport that
answers like an API server. What the page is shown (never a value, never ciphertext), who it
offers writes to and why not, and exactly which patch each write sends."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from tests.support.fake_api import NS, SEALED, FakeApiServer, flow_object, space_object

from spacesecrets.cli.ui.api import SpaceApi, UiError
from spacesecrets.core import crypto
from spacesecrets.kube.client import Kube
from spacesecrets.names import ROLLBACK_ANNOTATION, SYNC_NOW

VALUE = "the-value-4f0c"


@pytest.fixture(scope="module")
def ring() -> crypto.KeyRing:
    return crypto.KeyRing.create(dt.datetime.now(dt.UTC))


@pytest.fixture
def fake(ring: crypto.KeyRing) -> FakeApiServer:
    return FakeApiServer(crypto.public_key_pem(ring.current.public))


def api_of(fake: FakeApiServer) -> SpaceApi:
    return SpaceApi(Kube(fake), NS, "spacesecrets-system")


def test_spaces_fall_back_to_the_users_namespace_when_a_cluster_wide_list_is_refused(
    fake: FakeApiServer,
) -> None:
    fake.spaces = [space_object(NS), space_object("elsewhere")]
    doc = api_of(fake).spaces()
    assert (doc["scope"], doc["namespace"], doc["user"]) == ("namespace", NS, "alice")
    assert [s["namespace"] for s in doc["spaces"]] == [NS]
    fake.may_list_all = True
    doc = api_of(fake).spaces()
    assert doc["scope"] == "cluster"
    assert [s["namespace"] for s in doc["spaces"]] == ["elsewhere", NS]
    assert doc["spaces"][1] | {"ready": None} == {
        "namespace": NS,
        "name": "secrets",
        "version": 2,
        "keyCount": 1,
        "updatedAt": "2026-11-29T12:05:00Z",
        "ready": None,
    }


def test_a_space_shows_metadata_only_never_ciphertext(fake: FakeApiServer) -> None:
    fake.flows = [flow_object("orders", 1)]
    doc = api_of(fake).space(NS)
    text = json.dumps(doc)
    assert SEALED not in text and "hpke1:" not in text and '"sealed"' not in text
    assert doc["keys"] == [
        {"name": "API_HOST", "format": "text", "version": 2, "updatedAt": "2026-11-29T12:05:00Z"}
    ]
    assert [h["version"] for h in doc["history"]] == [2, 1]
    assert (doc["version"], doc["createdAt"], doc["pending"]) == (2, "2026-11-29T12:00:00Z", False)
    (flow,) = doc["flows"]
    assert (flow["syncedVersion"], flow["behind"], flow["target"]) == (
        1,
        1,
        {"kind": "Secret", "name": "orders-secrets"},
    )


def test_a_namespace_without_a_space_is_a_404(fake: FakeApiServer) -> None:
    with pytest.raises(UiError) as err:
        api_of(fake).space("nowhere")
    assert err.value.status == 404 and "has no SpaceSecrets" in err.value.message


@pytest.mark.parametrize(
    ("user", "groups", "owners", "may_update", "reason"),
    [
        ("alice", (), [{"kind": "User", "name": "alice"}], True, ""),
        ("bob", ("team-a-owners",), [{"kind": "Group", "name": "team-a-owners"}], True, ""),
        (
            f"system:serviceaccount:{NS}:gitops",
            (),
            [{"kind": "ServiceAccount", "name": "gitops"}],
            True,
            "",
        ),
        ("root", ("system:masters",), [{"kind": "User", "name": "alice"}], True, ""),
        ("alice", (), [{"kind": "User", "name": "alice"}], False, "permissions do not let alice"),
        (
            "carol",
            (),
            [{"kind": "User", "name": "alice"}],
            True,
            f"carol is not an owner of space {NS} (owners: User alice)",
        ),
        (
            "system:serviceaccount:other:gitops",
            (),
            [{"kind": "ServiceAccount", "name": "gitops"}],
            True,
            "is not an owner",
        ),
    ],
)
def test_writes_are_offered_to_owners_the_api_server_would_let_update(
    fake: FakeApiServer,
    user: str,
    groups: tuple[str, ...],
    owners: list[dict[str, str]],
    may_update: bool,
    reason: str,
) -> None:
    fake.user, fake.groups, fake.may_update = user, groups, may_update
    fake.spaces = [space_object(NS, owners)]
    access = api_of(fake).space(NS)["access"]
    assert access["canEdit"] == (not reason)
    assert reason in access["reason"]
    review = next(b for m, p, b in fake.requests if p.endswith("/selfsubjectaccessreviews"))
    assert review["spec"]["resourceAttributes"] == {
        "group": "spacesecrets.io",
        "resource": "spacesecrets",
        "verb": "update",
        "namespace": NS,
        "name": "secrets",
    }


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_new_key_is_sealed_here_and_patched_alone(
    fake: FakeApiServer, ring: crypto.KeyRing, fmt: str
) -> None:
    value = json.dumps({"token": VALUE}) if fmt == "json" else VALUE
    done = api_of(fake).put_key(NS, {"key": "NEW_KEY", "format": fmt, "value": value}, new=True)
    assert VALUE not in json.dumps(done)
    ((_, path, patch),) = fake.writes()
    assert path == f"/apis/spacesecrets.io/v1alpha1/namespaces/{NS}/spacesecrets/secrets"
    assert list(patch) == ["spec"] and list(patch["spec"]) == ["data"]
    entry = patch["spec"]["data"]["NEW_KEY"]
    assert entry["format"] == fmt and VALUE not in json.dumps(patch)
    assert ring.unseal(NS, "NEW_KEY", fmt, entry["sealed"]) == value.encode()
    with pytest.raises(crypto.UnsealError):  # bound to the space, the key and the format
        ring.unseal("other", "NEW_KEY", fmt, entry["sealed"])


def test_an_edit_needs_the_key_and_an_add_needs_a_new_one(fake: FakeApiServer) -> None:
    api = api_of(fake)
    with pytest.raises(UiError) as err:
        api.put_key(NS, {"key": "MISSING", "format": "text", "value": VALUE}, new=False)
    assert err.value.status == 404
    with pytest.raises(UiError) as err:
        api.put_key(NS, {"key": "API_HOST", "format": "text", "value": VALUE}, new=True)
    assert err.value.status == 409
    api.put_key(NS, {"key": "API_HOST", "format": "json", "value": "[1]"}, new=False)
    ((_, _, patch),) = fake.writes()
    assert patch["spec"]["data"]["API_HOST"]["format"] == "json"


def test_a_value_over_the_limit_is_refused_before_sealing(fake: FakeApiServer) -> None:
    with pytest.raises(UiError) as err:
        api_of(fake).put_key(NS, {"key": "BIG", "format": "text", "value": "x" * 65537}, new=True)
    assert "65537 bytes" in err.value.message
    assert fake.writes() == []


def test_remove_patches_the_key_away(fake: FakeApiServer) -> None:
    api_of(fake).remove_key(NS, "API_HOST")
    assert fake.writes()[0][2] == {"spec": {"data": {"API_HOST": None}}}
    with pytest.raises(UiError):
        api_of(fake).remove_key(NS, "NOT_THERE")


def test_the_api_servers_refusal_is_passed_on_in_its_words(fake: FakeApiServer) -> None:
    fake.refuse_patch = "only owners of space team-a (User alice) may update; bob is not one"
    with pytest.raises(UiError) as err:
        api_of(fake).put_key(NS, {"key": "NEW_KEY", "format": "text", "value": VALUE}, new=True)
    assert err.value.status == 403
    assert fake.refuse_patch in err.value.message and VALUE not in err.value.message


def test_rollback_sets_the_annotation_to_a_kept_version(fake: FakeApiServer) -> None:
    with pytest.raises(UiError):
        api_of(fake).rollback(NS, {"version": 7})
    with pytest.raises(UiError):
        api_of(fake).rollback(NS, {"version": True})
    assert fake.writes() == []
    api_of(fake).rollback(NS, {"version": 1})
    assert fake.writes()[0][2] == {"metadata": {"annotations": {ROLLBACK_ANNOTATION: "1"}}}


def test_sync_now_stamps_one_flow_or_every_flow(fake: FakeApiServer) -> None:
    fake.flows = [flow_object("a", 1), flow_object("b", 2)]
    done = api_of(fake).sync(NS, "a")
    ((_, path, patch),) = fake.writes()
    assert path.endswith(f"/namespaces/{NS}/flowsecretsyncs/a")
    assert patch == {"metadata": {"annotations": {SYNC_NOW: done["requested"]["a"]}}}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", done["requested"]["a"])
    fake.requests.clear()
    done = api_of(fake).sync(NS, None)
    assert [p.rsplit("/", 1)[1] for _, p, _ in fake.writes()] == ["a", "b"]
    assert [b["metadata"]["annotations"][SYNC_NOW] for _, _, b in fake.writes()] == [
        done["requested"]["a"],
        done["requested"]["b"],
    ]
    fake.flows = []
    with pytest.raises(UiError):
        api_of(fake).sync(NS, None)


def test_a_sync_is_pending_until_the_operator_records_that_very_request(
    fake: FakeApiServer,
) -> None:
    stamp = "2026-11-29T12:04:05.678Z"
    waiting = flow_object("waiting", 1, {SYNC_NOW: stamp})
    handled = flow_object("handled", 2, {SYNC_NOW: stamp})
    handled["status"]["syncNow"] = {"requested": stamp, "at": "2026-11-29T12:04:06Z", "version": 2}
    older = flow_object("older", 1, {SYNC_NOW: stamp})
    older["status"]["syncNow"] = {"requested": "2026-11-29T11:00:00.000Z", "at": "x", "version": 1}
    fake.flows = [waiting, handled, older, flow_object("never", 2)]
    flows = {f["name"]: f for f in api_of(fake).space(NS)["flows"]}
    assert {n: f["syncPending"] for n, f in flows.items()} == {
        "waiting": True,
        "handled": False,
        "older": True,
        "never": False,
    }
    assert flows["handled"]["syncNow"] == handled["status"]["syncNow"]
