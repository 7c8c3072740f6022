"""The documents a flow is handed and the ownership rules of its target: pure."""

from __future__ import annotations

import base64
import json

from spacesecrets.core import projection
from spacesecrets.core.projection import FlowSpec, Ownership, SpaceView
from spacesecrets.core.versions import Value

KEYS = {
    "PRODUCT_A_API_HOST": {"format": "text", "version": 3, "updatedAt": "t3"},
    "PRODUCT_A_CONFIG": {"format": "json", "version": 7, "updatedAt": "t7"},
}
VALUES = {
    "PRODUCT_A_API_HOST": Value("text", b"api.example.com"),
    "PRODUCT_A_CONFIG": Value("json", b'{"retries": 3}'),
}
CREATED, UPDATED = "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"
SPACE = SpaceView.of(
    "team-a", version=7, created_at=CREATED, updated_at=UPDATED, keys=KEYS, values=VALUES
)
FLOW = FlowSpec("orders-flow", "uid-1", "Secret", "orders-flow-secrets", "1m", True, None)


def test_documents_match_the_contract() -> None:
    docs = projection.documents(SPACE, FLOW, "2026-03-01T00:00:00Z")
    assert json.loads(docs["SECRETS"]) == {
        "PRODUCT_A_API_HOST": "api.example.com",
        "PRODUCT_A_CONFIG": {"retries": 3},
    }
    assert json.loads(docs["SECRETS_METADATA"]) == {
        "space": "team-a",
        "version": 7,
        "createdAt": "2026-01-01T00:00:00Z",
        "updatedAt": "2026-02-01T00:00:00Z",
        "issuedAt": "2026-03-01T00:00:00Z",
        "autosync": "1m",
        "syncOnSave": True,
        "keys": {
            "PRODUCT_A_API_HOST": {"format": "text", "version": 3, "updatedAt": "t3"},
            "PRODUCT_A_CONFIG": {"format": "json", "version": 7, "updatedAt": "t7"},
        },
    }


def test_key_subset_and_missing_keys() -> None:
    flow = FlowSpec("f", "u", "Secret", "t", "1m", True, ("PRODUCT_A_CONFIG", "NOPE"))
    assert projection.missing_keys(SPACE, flow) == ["NOPE"]
    docs = projection.documents(SPACE, flow, "now")
    assert list(json.loads(docs["SECRETS"])) == ["PRODUCT_A_CONFIG"]


def test_target_carries_mark_owner_and_version() -> None:
    docs = projection.documents(SPACE, FLOW, "now")
    target = projection.desired_target("team-a", FLOW, docs, 7, "now")
    meta = target["metadata"]
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "spacesecrets"
    assert meta["annotations"]["spacesecrets.io/version"] == "7"
    assert meta["ownerReferences"][0]["uid"] == "uid-1"
    assert meta["ownerReferences"][0]["controller"] is True
    assert projection.ownership(target, "uid-1") is Ownership.OURS
    assert projection.ownership(target, "uid-2") is Ownership.OTHER_FLOW
    assert projection.ownership({"metadata": {"name": "x"}}, "uid-1") is Ownership.FOREIGN
    labelled_only = {"metadata": {"labels": {"app.kubernetes.io/managed-by": "spacesecrets"}}}
    assert projection.ownership(labelled_only, "uid-1") is Ownership.FOREIGN


def test_up_to_date_ignores_issued_at_only() -> None:
    a = projection.desired_target("team-a", FLOW, projection.documents(SPACE, FLOW, "t1"), 7, "t1")
    b = projection.desired_target("team-a", FLOW, projection.documents(SPACE, FLOW, "t2"), 7, "t2")
    assert projection.up_to_date(a, b)
    other = SpaceView.of(
        "team-a",
        version=7,
        created_at=CREATED,
        updated_at=UPDATED,
        keys=KEYS,
        values={**VALUES, "PRODUCT_A_API_HOST": Value("text", b"other")},
    )
    c = projection.desired_target("team-a", FLOW, projection.documents(other, FLOW, "t1"), 7, "t1")
    assert not projection.up_to_date(a, c)


def test_configmap_target_holds_plain_documents() -> None:
    flow = FlowSpec("f", "u", "ConfigMap", "t", "1m", True, None)
    target = projection.desired_target(
        "team-a", flow, projection.documents(SPACE, flow, "t"), 7, "t"
    )
    assert target["kind"] == "ConfigMap"
    assert json.loads(target["data"]["SECRETS"])["PRODUCT_A_CONFIG"] == {"retries": 3}


def test_space_view_repr_hides_values() -> None:
    assert "api.example.com" not in repr(SPACE)


def test_space_view_packs_its_keys_and_never_shows_a_value() -> None:
    entries = SPACE.entries()
    assert entries["PRODUCT_A_API_HOST"] == ("text", 3, "t3", "api.example.com")
    assert entries["PRODUCT_A_CONFIG"].projected() == {"retries": 3}
    assert isinstance(SPACE.packed, bytes)
    assert "api.example.com" not in repr(SPACE)


def _issued(flow: FlowSpec = FLOW) -> dict:
    docs = projection.documents(SPACE, flow, "2026-03-01T00:00:00Z")
    return projection.desired_target("team-a", flow, docs, 7, "2026-03-01T00:00:00Z")


def test_a_target_holding_its_issued_version_is_recognised() -> None:
    assert projection.holds_issued(_issued(), "team-a", FLOW, 7, VALUES)
    subset = FlowSpec("f", "uid-1", "Secret", "t", "24h", True, ("PRODUCT_A_CONFIG",))
    assert projection.holds_issued(_issued(subset), "team-a", subset, 7, VALUES)


def test_a_changed_or_incomplete_target_is_not_its_issued_version() -> None:
    other = {**VALUES, "PRODUCT_A_API_HOST": Value("text", b"forged.example.com")}
    assert not projection.holds_issued(_issued(), "team-a", FLOW, 7, other)
    more = {**VALUES, "NEW_KEY": Value("text", b"x")}
    assert not projection.holds_issued(_issued(), "team-a", FLOW, 7, more)
    assert not projection.holds_issued(_issued(), "team-a", FLOW, 6, VALUES)
    garbled = _issued()
    garbled["data"]["SECRETS_METADATA"] = "bm90IGpzb24="  # "not json"
    assert not projection.holds_issued(garbled, "team-a", FLOW, 7, VALUES)


EARLY = projection.Claimant("2026-01-01T00:00:00Z", "zulu", "uid-early")
LATE = projection.Claimant("2026-01-02T00:00:00Z", "alpha", "uid-late")


def test_the_flow_owning_a_target_keeps_it_whoever_was_created_first() -> None:
    owned_by_late = _issued(FlowSpec("alpha", "uid-late", "Secret", "t", "1m", True, None))
    assert projection.keeper(owned_by_late, [EARLY, LATE]) == ("uid-late", "alpha")
    # the same whatever order the flows are known in, and whichever of them is known at all
    assert projection.keeper(owned_by_late, [LATE, EARLY]) == ("uid-late", "alpha")
    assert projection.keeper(owned_by_late, [EARLY]) == ("uid-late", "alpha")


def test_without_a_target_the_earliest_created_flow_gets_it() -> None:
    assert projection.keeper(None, [LATE, EARLY]) == ("uid-early", "zulu")
    same_second = projection.Claimant(EARLY.created, "alpha", "uid-same")
    assert projection.keeper(None, [EARLY, same_second]) == ("uid-same", "alpha")  # by name
    assert projection.keeper(None, []) is None


def test_nobody_keeps_a_target_spacesecrets_does_not_manage() -> None:
    hand_made = {"kind": "Secret", "metadata": {"name": "t"}, "data": {}}
    assert projection.keeper(hand_made, [EARLY, LATE]) is None
    unowned = {"metadata": {"labels": {"app.kubernetes.io/managed-by": "spacesecrets"}}}
    assert projection.keeper(unowned, [EARLY]) is None
    assert projection.controlling_flow(hand_made) is None


DEEP = "[" * 100_000  # what someone may write into a target to break its readers


def _with_secrets(text: str) -> dict:
    target = _issued()
    target["data"]["SECRETS"] = base64.b64encode(text.encode()).decode()
    return target


def test_a_target_that_does_not_parse_is_simply_not_up_to_date() -> None:
    assert projection.unreadable_documents(_issued()) == []
    for text in (DEEP, "{not json"):
        broken = _with_secrets(text)
        assert projection.unreadable_documents(broken) == ["SECRETS"]
        assert not projection.up_to_date(broken, _issued())
    deep_metadata = _issued()
    deep_metadata["data"]["SECRETS_METADATA"] = base64.b64encode(DEEP.encode()).decode()
    assert not projection.holds_issued(deep_metadata, "team-a", FLOW, 7, VALUES)
    assert projection.unreadable_documents(deep_metadata) == ["SECRETS_METADATA"]
