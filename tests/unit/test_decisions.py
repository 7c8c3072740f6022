"""The operator's decisions, without a cluster: each pure function in core.decisions and
core.provenance, with the inputs the engine gathers for it."""

from __future__ import annotations

import json

from spacesecrets.core import decisions, provenance
from spacesecrets.core.versions import EntryError
from spacesecrets.names import FlowReason, SpaceReason

NS = "team-a"
ALICE = provenance.Identity("alice@example.com", ("system:authenticated",))


def facts(**changes: object) -> decisions.FlowFacts:
    base = decisions.FlowFacts(
        namespace=NS,
        operator_namespace="spacesecrets-system",
        has_space=True,
        approval_problem=None,
        target_kind="Secret",
        configmaps_allowed=False,
        missing_keys=[],
        version=3,
    )
    return base._replace(**changes)  # type: ignore[arg-type]


def test_the_store_is_the_one_its_history_belongs_to_else_the_oldest() -> None:
    live = {"u-new": ("2026-01-02T00:00:00Z", "b"), "u-old": ("2026-01-01T00:00:00Z", "a")}
    assert decisions.primary_store(live, None) == "a"
    assert decisions.primary_store(live, "u-new") == "b"
    assert decisions.primary_store(live, "u-gone") == "a"
    assert decisions.primary_store({}, "u-new") is None


def test_why_not_ready_names_one_reason_or_several_and_what_stays_current() -> None:
    one = [EntryError("A", "MalformedSealedValue", "A is malformed")]
    assert decisions.why_not_ready(one, 4) == (
        "MalformedSealedValue",
        "A is malformed; version 4 stays current",
    )
    two = [*one, EntryError("B", "InvalidJSON", "B is not JSON")]
    reason, message = decisions.why_not_ready(two, 0)
    assert reason == SpaceReason.INVALID_SECRETS
    assert message == "A is malformed; B is not JSON"


def test_why_not_synced_in_order() -> None:
    assert decisions.why_not_synced(facts()) is None
    operator_ns = facts(namespace="spacesecrets-system", has_space=False)
    assert decisions.why_not_synced(operator_ns).reason == FlowReason.OPERATOR_NAMESPACE  # type: ignore[union-attr]
    missing = decisions.why_not_synced(facts(has_space=False, approval_problem="x"))
    assert missing is not None and missing.reason == FlowReason.SPACE_MISSING
    unapproved = decisions.why_not_synced(facts(approval_problem="bob is not an owner"))
    assert unapproved == (FlowReason.APPROVAL_REQUIRED, "bob is not an owner")
    gated = decisions.why_not_synced(facts(target_kind="ConfigMap", missing_keys=["X"]))
    assert gated is not None and gated.reason == FlowReason.CONFIGMAP_NOT_ALLOWED
    allowed = facts(target_kind="ConfigMap", configmaps_allowed=True)
    assert decisions.why_not_synced(allowed) is None
    keys = decisions.why_not_synced(facts(missing_keys=["X", "Y"]))
    assert keys == (FlowReason.MISSING_KEY, "the space has no key X, Y (version 3)")


def test_a_flow_yields_a_target_someone_else_keeps() -> None:
    assert decisions.why_yield(("u-1", "mine"), "u-1", "Secret", "t") is None
    conflict = decisions.why_yield(("u-2", "first"), "u-1", "Secret", "t")
    assert conflict is not None and conflict.reason == FlowReason.CONFLICT
    assert "FlowSecretSync first" in conflict.message
    foreign = decisions.why_yield(None, "u-1", "Secret", "t")
    assert foreign is not None and foreign.reason == FlowReason.TARGET_NOT_OWNED


def test_a_resumed_flow_keeps_its_issued_version_only_between_ticks() -> None:
    behind = decisions.Resume(
        synced_version=2,
        synced=True,
        observed_generation=1,
        generation=1,
        space_version=3,
        space_updated_at="2026-01-01T00:10:00Z",
        last_tick=decisions.epoch("2026-01-01T00:09:00Z"),
        target_ours=True,
    )
    assert decisions.may_keep_issued_version(behind)
    assert not decisions.may_keep_issued_version(behind._replace(synced_version=3))
    assert not decisions.may_keep_issued_version(behind._replace(synced=False))
    assert not decisions.may_keep_issued_version(behind._replace(generation=2))  # a save
    tick = decisions.epoch("2026-01-01T00:11:00Z")
    assert not decisions.may_keep_issued_version(behind._replace(last_tick=tick))
    assert not decisions.may_keep_issued_version(behind._replace(target_ours=False))
    unknown = behind._replace(space_updated_at="garbage")
    assert not decisions.may_keep_issued_version(unknown)  # as if a tick had passed


def test_the_status_a_flow_gets_keeps_what_it_was_issued_and_drops_behind() -> None:
    old = {"syncedVersion": 2, "issuedAt": "t1", "behind": 1, "conditions": []}
    synced = decisions.synced_status(old, 3, "t2", generation=4, now="t3")
    assert synced["syncedVersion"] == 3 and synced["issuedAt"] == "t2"
    assert "behind" not in synced  # derived where it is shown, never stored
    assert [c["type"] for c in synced["conditions"]] == ["Synced"]
    configmap = decisions.synced_status(old, 3, "t2", generation=4, now="t3", configmap="cm")
    assert [c["type"] for c in configmap["conditions"]] == ["Synced", "ConfigMapTarget"]
    failed = decisions.failed_status(synced, "Synced", "Conflict", "m", generation=5, now="t4")
    assert failed["syncedVersion"] == 3  # the version it holds stays reported
    assert failed["conditions"][0]["status"] == "False"
    assert decisions.status_patch(old, synced) == {
        k: v for k, v in {**synced, "behind": None}.items() if old.get(k) != v
    }


def test_a_sync_now_request_is_pending_until_the_status_records_that_very_value() -> None:
    stamp = "2026-12-02T01:02:03.456Z"
    assert decisions.sync_now_request(None, {}) is None
    assert decisions.sync_now_request("", {}) is None  # an empty annotation asks for nothing
    assert decisions.sync_now_request(stamp, {}) == stamp  # made while no operator ran, or new
    handled = {"syncNow": {"requested": stamp, "at": "t", "version": 3}}
    assert decisions.sync_now_request(stamp, handled) is None  # a restart writes nothing
    assert decisions.sync_now_request("again", handled) == "again"  # any change is a request
    assert decisions.sync_now_request(stamp, {"syncNow": "garbage"}) == stamp


def test_a_handled_request_records_when_and_the_version_the_flow_then_holds() -> None:
    synced = {"syncedVersion": 4, "issuedAt": "t1", "conditions": []}
    out = decisions.sync_now_handled(synced, "r", "t2")
    assert out == {**synced, "syncNow": {"requested": "r", "at": "t2", "version": 4}}
    assert decisions.sync_now_request("r", out) is None
    # a flow that may not be synced and never was: handled, with no version to report
    refused = decisions.failed_status({}, "Synced", "ApprovalRequired", "m", generation=1, now="t")
    assert decisions.sync_now_handled(refused, "r", "t2")["syncNow"] == {
        "requested": "r",
        "at": "t2",
    }


# -- provenance -----------------------------------------------------------------------------------


def test_a_stamp_parses_cel_escapes_and_refuses_what_is_not_one() -> None:
    stamp = '{"user":"bell\\a","groups":["g\\v","system:authenticated"]}'
    assert provenance.Identity.parse(stamp) == provenance.Identity(
        "bell\a", ("g\v", "system:authenticated")
    )
    for bad in (None, "", "forged", '{"groups":[]}', '{"user":"x","groups":[1]}', "[]"):
        assert provenance.Identity.parse(bad) is None


def test_owners_are_matched_as_the_admission_policy_matches_them() -> None:
    owners = [("User", "alice@example.com"), ("Group", "team-a-owners"), ("ServiceAccount", "ci")]
    assert provenance.is_owner(ALICE, NS, owners)
    assert provenance.is_owner(provenance.Identity("x", ("team-a-owners",)), NS, owners)
    assert provenance.is_owner(
        provenance.Identity(f"system:serviceaccount:{NS}:ci", ()), NS, owners
    )
    assert not provenance.is_owner(
        provenance.Identity("system:serviceaccount:team-b:ci", ()), NS, owners
    )
    assert provenance.is_owner(provenance.Identity("root", ("system:masters",)), NS, [])
    assert not provenance.is_owner(None, NS, owners)


def test_a_flow_needs_a_current_owners_authorization() -> None:
    owners = [("User", "alice@example.com")]
    stamp = json.dumps({"user": "alice@example.com", "groups": []})
    assert provenance.flow_approval_problem(stamp, "f", NS, owners) is None
    bob = json.dumps({"user": "bob", "groups": []})
    problem = provenance.flow_approval_problem(bob, "f", NS, owners)
    assert problem is not None and "bob" in problem and "User alice@example.com" in problem
    assert "spacesecrets approve f" in problem
    assert provenance.flow_approval_problem(None, "f", NS, owners) is not None


def test_only_a_former_owner_continues_a_deleted_spaces_history() -> None:
    former = provenance.FormerSpace.of(
        {
            "spaceUid": "u-old",
            "spaceName": "secrets",
            "namespaceUid": "ns-1",
            "owners": [["User", "alice@example.com"]],
            "versions": [{"version": 3}, {"version": 2}],
            "deletedAt": "2026-01-01T00:00:00Z",
        }
    )
    assert provenance.restore_refusal(former, NS, "ns-1", ALICE, None) is None
    bob = provenance.Identity("bob", ())
    refusal = provenance.restore_refusal(former, NS, "ns-1", bob, "u-old")
    assert refusal is not None
    assert "User alice@example.com" in refusal and "versions 2-3" in refusal
    assert "starts at version 1" in refusal
    # a namespace created again: only an explicit request by a former owner
    again = provenance.restore_refusal(former, NS, "ns-2", ALICE, None)
    assert again is not None and "spacesecrets.io/restore-from: 'u-old'" in again
    assert provenance.restore_refusal(former, NS, "ns-2", ALICE, "u-old") is None
    assert provenance.restore_refusal(former, NS, "ns-2", ALICE, "u-other") is not None
    admin = provenance.Identity("root", ("system:masters",))
    assert provenance.restore_refusal(former, NS, "ns-1", admin, None) is None
    assert provenance.restore_refusal(former, NS, "ns-1", None, None) is not None


def test_a_status_digest_is_of_the_form_the_api_server_stores() -> None:
    written = {"version": 2, "createdAt": None, "keys": [{"name": "A", "restores": None}]}
    stored = {"keys": [{"name": "A"}], "version": 2}  # a merge patch's nulls remove fields
    assert decisions.status_digest(written) == decisions.status_digest(stored)
    assert decisions.status_digest(None) == decisions.status_digest({})
    assert decisions.status_digest({"version": 1}) != decisions.status_digest({"version": 2})
    assert decisions.status_digest({"keys": ["A", "B"]}) != decisions.status_digest(
        {"keys": ["B", "A"]}
    )
