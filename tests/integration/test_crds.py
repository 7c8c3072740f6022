"""The CRDs are generated from the models, match the files shipped, and the real API server
enforces them: invalid objects fail `kubectl apply` with a message naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from spacesecrets.devtools.dev import LocalCluster, wait_for
from spacesecrets.schema import crdgen

ROOT = Path(__file__).resolve().parents[2]


def test_crds_folder_equals_generated_output() -> None:
    generated = crdgen.all_crds()
    on_disk = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
    assert on_disk == generated, "crds/ is stale: run `make crds`"
    chart = {p.name: p.read_text() for p in (ROOT / "charts/spacesecrets/crds").glob("*.yaml")}
    assert chart == {n: t for n, t in generated.items() if n.startswith("spacesecrets.io_")}
    template = ROOT / "charts/spacesecrets/templates" / crdgen.CHART_POLICY_TEMPLATE
    assert template.read_text() == crdgen.chart_admission_template(), "run `make crds`"
    node_red = ROOT / "clients/node-red" / crdgen.NODE_RED_AUTOSYNC
    assert node_red.read_text() == crdgen.node_red_autosync(), "run `make crds`"


def test_every_field_has_a_description() -> None:
    def walk(schema: dict, path: str) -> list[str]:
        missing = []
        for name, sub in (schema.get("properties") or {}).items():
            if path == "" and name == "metadata":
                continue
            if not sub.get("description"):
                missing.append(f"{path}.{name}")
            missing += walk(sub, f"{path}.{name}")
            if isinstance(sub.get("items"), dict):
                missing += walk(sub["items"], f"{path}.{name}[]")
            if isinstance(sub.get("additionalProperties"), dict):
                missing += walk(sub["additionalProperties"], f"{path}.{name}{{}}")
        return missing

    for crd in (crdgen.space_secrets_crd(), crdgen.flow_secret_sync_crd()):
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert walk(schema, "") == []


def test_api_server_serves_the_crds_with_explain(cluster: LocalCluster) -> None:
    assert cluster.cp.version().startswith("v1.36.")
    # the OpenAPI document is published a moment after the CRD is established
    out = wait_for(
        "explain",
        lambda: cluster.cp.kubectl("explain", "spacesecrets.spec.data", check=False).stdout,
    )
    assert "KEY -> sealed entry" in out
    out = cluster.cp.kubectl("explain", "flowsecretsyncs.spec.autosync").stdout
    assert "1m, 30m" in out
    names = cluster.cp.kubectl("api-resources", "--api-group=spacesecrets.io", "-o", "name").stdout
    assert "spacesecrets.spacesecrets.io" in names and "flowsecretsyncs.spacesecrets.io" in names
    # short names and the category work as a user would type them
    assert cluster.cp.kubectl("get", "spsec,fss", "-A").returncode == 0
    assert cluster.cp.kubectl("get", "spacesecrets-all", "-A").returncode == 0
    assert cluster.cp.kubectl("get", "spacesecrets", "-A").returncode == 0


SEALED = "hpke1:0123456789abcdef:AAAA"


def space(ns: str, data: dict, owners: list | None = None) -> dict:
    spec: dict = {"data": data}
    if owners is not None:
        spec["owners"] = owners
    return {
        "apiVersion": "spacesecrets.io/v1alpha1",
        "kind": "SpaceSecrets",
        "metadata": {"name": "secrets", "namespace": ns},
        "spec": spec,
    }


def flow(ns: str, **spec: object) -> dict:
    return {
        "apiVersion": "spacesecrets.io/v1alpha1",
        "kind": "FlowSecretSync",
        "metadata": {"name": "f", "namespace": ns},
        "spec": {"target": {"name": "t"}, **spec},
    }


OWNER = [{"kind": "User", "name": "alice"}]


@pytest.mark.parametrize(
    ("doc", "field", "phrase"),
    [
        (
            lambda ns: space(ns, {"1BAD-KEY": {"sealed": SEALED}}, OWNER),
            "spec.data",
            "must be a variable name",
        ),
        (
            lambda ns: space(ns, {"GOOD": {"format": "yaml", "sealed": SEALED}}, OWNER),
            "spec.data.GOOD.format",
            "Unsupported value",
        ),
        (
            lambda ns: space(ns, {"GOOD": {"sealed": "plaintext!"}}, OWNER),
            "spec.data[GOOD].sealed",
            "hpke1",
        ),
        (lambda ns: space(ns, {}, []), "spec.owners", "at least 1"),
        (lambda ns: space(ns, {}, None), "spec.owners", "Required value"),
        (
            lambda ns: space(ns, {}, [{"kind": "Robot", "name": "x"}]),
            "spec.owners[0].kind",
            "Unsupported value",
        ),
        (lambda ns: flow(ns, autosync="5m"), "spec.autosync", "Unsupported value"),
        (
            lambda ns: flow(ns, target={"kind": "Pod", "name": "t"}),
            "spec.target.kind",
            "Unsupported value",
        ),
        (lambda ns: flow(ns, keys=["not-a-key"]), "spec.keys[0]", "should match"),
    ],
    ids=[
        "bad-key-name",
        "bad-format",
        "plaintext-value",
        "no-owners",
        "owners-missing",
        "bad-owner-kind",
        "bad-autosync",
        "bad-target-kind",
        "bad-key-subset",
    ],
)
def test_invalid_objects_fail_kubectl_apply(
    cluster: LocalCluster, ns: str, doc, field: str, phrase: str
) -> None:
    result = cluster.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc(ns)), check=False)
    assert result.returncode != 0
    assert field in result.stderr, result.stderr
    assert phrase in result.stderr, result.stderr
