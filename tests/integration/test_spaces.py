"""SpaceSecrets against the real control plane and the real operator process: versions, bad input,
duplicates, rollback and restore, applied with kubectl as an owner would."""

from __future__ import annotations

import base64
import json

import pytest
import yaml
from tests.support.space import Space

from spacesecrets.devtools.dev import OPERATOR_NAMESPACE, wait_for


def history_secret(space: Space) -> dict:
    return space.kube.get("Secret", OPERATOR_NAMESPACE, f"history-{space.ns}")


def test_add_edit_remove_each_bump_once_and_resealing_does_not(space: Space) -> None:
    space.apply({"HOST": "api.example.com", "CONF": {"retries": 3}})
    obj = space.wait_version(1)
    status = obj["status"]
    assert status["createdAt"] == status["updatedAt"]
    assert {k["name"]: k["format"] for k in status["keys"]} == {"HOST": "text", "CONF": "json"}
    assert status["history"][0]["added"] == ["CONF", "HOST"]
    assert space.condition()["reason"] == "Unsealed"

    # the same plaintext sealed anew (new ciphertext) is not a change
    space.apply({"HOST": "api.example.com", "CONF": {"retries": 3}})
    wait_for(
        "the re-seal to be observed",
        lambda: (
            space.get()["status"]["observedGeneration"]
            == space.get()["metadata"]["generation"]
            == 2
        ),
    )
    assert space.get()["status"]["version"] == 1

    # changing owners alone is not a secrets version
    space.owners = [*space.owners, {"kind": "Group", "name": "team-a-owners"}]
    space.apply({"HOST": "api.example.com", "CONF": {"retries": 3}})
    wait_for(
        "the owners change to be observed", lambda: space.get()["status"]["observedGeneration"] == 3
    )
    assert space.get()["status"]["version"] == 1

    space.apply({"HOST": "api.example.com", "CONF": {"retries": 3}, "NEW": "x"})
    assert space.wait_version(2)["status"]["history"][0]["added"] == ["NEW"]
    space.apply({"HOST": "api2.example.com", "CONF": {"retries": 3}, "NEW": "x"})
    obj = space.wait_version(3)
    assert obj["status"]["history"][0]["changed"] == ["HOST"]
    keys = {k["name"]: k["version"] for k in obj["status"]["keys"]}
    assert keys == {"HOST": 3, "CONF": 1, "NEW": 2}
    space.apply({"HOST": "api2.example.com", "CONF": {"retries": 3}})
    obj = space.wait_version(4)
    assert obj["status"]["history"][0]["removed"] == ["NEW"]
    assert [h["version"] for h in obj["status"]["history"]] == [4, 3, 2, 1]
    assert len(space.events("VersionCreated")) == 4


BAD_CASES = {
    "tampered": lambda s: {
        **s.sealed("TOKEN", "tampered"),
        "sealed": _flip(s.sealed("TOKEN", "tampered")["sealed"]),
    },
    "mis-scoped": lambda s: s.sealed("TOKEN", "elsewhere", namespace="other-space"),
    "renamed": lambda s: s.sealed("OTHER_NAME", "renamed"),
    "retyped": lambda s: {**s.sealed("TOKEN", '"x"', "json"), "format": "text"},
    "unknown-kid": lambda s: {
        "format": "text",
        "sealed": "hpke1:00000000deadbeef:" + s.sealed("TOKEN", "x")["sealed"].split(":")[2],
    },
    "invalid-json": lambda s: s.sealed("TOKEN", "{'not': json}", "json"),
    "oversize": lambda s: s.sealed("TOKEN", "x" * (64 * 1024 + 1)),
}
REASONS = {
    "tampered": "CannotOpen",
    "mis-scoped": "CannotOpen",
    "renamed": "CannotOpen",
    "retyped": "CannotOpen",
    "unknown-kid": "UnknownSealingKey",
    "invalid-json": "InvalidJSON",
    "oversize": "TooLarge",
}


def _flip(sealed: str) -> str:
    prefix, kid, b64 = sealed.split(":")
    blob = bytearray(base64.b64decode(b64))
    blob[-1] ^= 1
    return f"{prefix}:{kid}:{base64.b64encode(bytes(blob)).decode()}"


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_is_refused_and_last_good_version_kept(space: Space, case: str) -> None:
    space.apply({"GOOD": "keep-me"})
    space.wait_version(1)
    space.apply({"GOOD": "keep-me-too", "TOKEN": BAD_CASES[case](space)})
    cond = space.wait_condition("Ready", "False", REASONS[case])
    assert "TOKEN" in cond["message"]
    assert "version 1 stays current" in cond["message"]
    obj = space.get()
    assert obj["status"]["version"] == 1
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    events = wait_for("the Warning event", lambda: space.events(REASONS[case]))
    assert events[0]["type"] == "Warning" and "TOKEN" in events[0]["message"]
    # fixing the input makes a new version; the refused spec never became one
    space.apply({"GOOD": "keep-me-too"})
    assert space.wait_version(2)["status"]["history"][0]["changed"] == ["GOOD"]
    assert space.condition()["status"] == "True"


def test_json_a_flow_cannot_parse_is_refused_and_version_1_kept(space: Space) -> None:
    """NaN and a too-deep document, sealed directly (the CLI would refuse them first): Python's
    json reads both, a flow's JSON.parse would not read the SECRETS document holding them."""
    space.apply({"GOOD": "keep-me"})
    space.wait_version(1)
    space.kubectl_apply(space.flow("reader", "reader-secrets"))
    space.wait_condition("Synced", "True", None, "reader", "flowsecretsyncs")

    def refused_for(cause: str) -> dict | None:
        cond = space.condition()
        return cond if cond.get("status") == "False" and cause in cond["message"] else None

    for value, cause in [
        ('{"a": NaN, "b": "hunter2"}', "NaN is not allowed"),
        ("[" * 40 + '"hunter2"' + "]" * 40, "nests 40 levels deep; the limit is 32"),
    ]:
        space.apply({"GOOD": "keep-me", "CONF": space.sealed("CONF", value, "json")})
        cond = wait_for(cause, lambda c=cause: refused_for(c))
        assert cond["reason"] == "InvalidJSON"
        assert cond["message"].startswith(f"CONF: JSON value is not valid for flows: {cause}")
        assert "version 1 stays current" in cond["message"]
        assert "hunter2" not in cond["message"]
        events = wait_for(
            "the Warning event",
            lambda c=cause: [e for e in space.events("InvalidJSON") if c in e["message"]],
        )
        assert events[0]["type"] == "Warning" and "hunter2" not in events[0]["message"]
        obj = space.get()
        assert obj["status"]["version"] == 1
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        assert space.target_documents("reader-secrets")["SECRETS"] == {"GOOD": "keep-me"}


def test_second_space_in_namespace_is_a_duplicate(space: Space) -> None:
    space.apply({"A": "1"})
    space.wait_version(1)
    space.apply({"B": "2"}, name="second")
    cond = space.wait_condition("Ready", "False", "DuplicateSpace", name="second")
    assert "secrets" in cond["message"]
    assert space.get()["status"]["version"] == 1
    assert space.events("DuplicateSpace")


def test_rollback_restores_as_new_version(space: Space) -> None:
    space.apply({"A": "one", "B": "two"})
    space.wait_version(1)
    space.apply({"A": "uno"})
    space.wait_version(2)
    space.cluster.cp.kubectl(
        "annotate", "spacesecrets", "secrets", "-n", space.ns, "spacesecrets.io/rollback-to=1"
    )
    obj = space.wait_version(3)
    entry = obj["status"]["history"][0]
    assert entry["rollbackOf"] == 1
    assert space.condition("Rollback")["reason"] == "RolledBack"
    assert entry["added"] == ["B"] and entry["changed"] == ["A"]
    assert "spacesecrets.io/rollback-to" not in obj["metadata"].get("annotations", {})
    assert sorted(obj["spec"]["data"]) == ["A", "B"]
    # rolling back to a version that isn't kept is refused, with nothing lost
    space.cluster.cp.kubectl(
        "annotate",
        "spacesecrets",
        "secrets",
        "-n",
        space.ns,
        "spacesecrets.io/rollback-to=99",
        "--overwrite",
    )
    cond = space.wait_condition("Rollback", "False", "RollbackFailed")
    assert "99" in cond["message"]
    assert space.events("RollbackFailed")[0]["type"] == "Warning"
    assert space.condition("Ready")["status"] == "True"
    assert space.get()["status"]["version"] == 3


def test_history_is_encrypted_in_operator_namespace(space: Space) -> None:
    space.apply({"PASSWORD": "correct-horse-battery"})
    space.wait_version(1)
    space.apply({"PASSWORD": "second-secret-value"})
    space.wait_version(2)
    secret = history_secret(space)
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert {"datakey", "index.json", "v1", "v2"} <= set(decoded)
    blob = json.dumps(decoded)
    assert "correct-horse-battery" not in blob and "second-secret-value" not in blob
    index = json.loads(decoded["index.json"])
    assert index["version"] == 2 and "PASSWORD" in index["keys"]


def test_deleted_space_history_is_kept_and_restorable(space: Space) -> None:
    space.apply({"A": "first"})
    space.wait_version(1)
    space.apply({"A": "second"})
    space.wait_version(2)
    space.cluster.cp.kubectl("delete", "spacesecrets", "secrets", "-n", space.ns)
    wait_for(
        "the history to be marked deleted",
        lambda: json.loads(base64.b64decode(history_secret(space)["data"]["index.json"]))[
            "deletedAt"
        ],
    )
    # a new store in the same namespace continues the numbering and can restore old versions
    space.apply({"A": "third"})
    obj = space.wait_version(3)
    assert [h["version"] for h in obj["status"]["history"]][:3] == [3, 2, 1]
    space.cluster.cp.kubectl(
        "annotate", "spacesecrets", "secrets", "-n", space.ns, "spacesecrets.io/rollback-to=1"
    )
    assert space.wait_version(4)["status"]["history"][0]["rollbackOf"] == 1


def test_owners_role_binding_follows_spec(space: Space) -> None:
    space.apply({"A": "1"})
    space.wait_version(1)
    rb = wait_for(
        "the owners RoleBinding",
        lambda: space.kube.get_role_binding(space.ns, "spacesecrets-owners"),
    )
    assert rb["roleRef"]["name"] == "spacesecrets-owner"
    assert [s["name"] for s in rb["subjects"]] == ["alice@example.com"]
    space.owners = [{"kind": "ServiceAccount", "name": "gitops"}]
    space.apply({"A": "1"})
    wait_for(
        "the RoleBinding to follow",
        lambda: (
            [
                (s["kind"], s["name"], s.get("namespace"))
                for s in space.kube.get_role_binding(space.ns, "spacesecrets-owners")["subjects"]
            ]
            == [("ServiceAccount", "gitops", space.ns)]
        ),
    )


def test_printer_columns(space: Space) -> None:
    space.apply({"A": "1", "B": "2"})
    space.wait_version(1)
    out = space.cluster.cp.kubectl("get", "spsec", "-n", space.ns).stdout
    header, row = out.splitlines()[:2]
    assert header.split() == ["NAME", "VERSION", "KEYS", "UPDATED", "READY"]
    assert row.split()[1:3] == ["1", "2"] and row.split()[-1] == "True"


def test_status_never_holds_values(space: Space) -> None:
    space.apply({"SECRET_ONE": "plaintext-marker-1", "SECRET_TWO": {"pw": "plaintext-marker-2"}})
    obj = space.wait_version(1)
    text = yaml.safe_dump(obj)
    assert "plaintext-marker" not in text


def test_a_status_written_by_someone_else_is_repaired(space: Space) -> None:
    """A killed operator's (or another shard's) last status write can be applied after its
    successor has reconciled the space: the space would show an old version until its spec next
    changed. The watch brings that status, and it is not the one the last reconcile left, so
    the space is reconciled again and its status mended. The late write is played with the
    operator's own credentials: nobody else may write a space's status."""
    space.apply({"A": "one"})
    space.wait_version(1)
    space.apply({"A": "two"})
    space.wait_version(2)
    space.cluster.cp.kubectl(
        "patch", "spacesecrets", space.name, "-n", space.ns, "--subresource=status",
        "--type=merge", "-p", '{"status":{"version":1,"keyCount":7}}',
        kubeconfig=space.cluster.operator_kubeconfig(),
    )  # fmt: skip
    repaired = space.wait_version(2, timeout=15)
    assert repaired["status"]["keyCount"] == 1
    assert [k["name"] for k in repaired["status"]["keys"]] == ["A"]
