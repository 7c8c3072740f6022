"""The Helm chart: it lints, its values are validated, what it renders is what the Python builders
define and what the real API server accepts, it installs into a bare private control plane, and the
operator runs end to end with exactly the RBAC of the chart's ServiceAccount.

The private control plane is bare (not `fresh_cluster`, which pre-installs the manifests): Helm
refuses to take over objects it did not create, and the point is that the chart alone suffices.
"""

from __future__ import annotations

import functools
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.logs import denials
from tests.support.space import Space

from spacesecrets.core import sharding
from spacesecrets.core.settings import Settings
from spacesecrets.devtools.controlplane import ControlPlane, find_binaries
from spacesecrets.devtools.dev import OPERATOR_NAMESPACE, LocalCluster, public_keys_reader, wait_for
from spacesecrets.kube.factory import kube_for
from spacesecrets.schema import manifests

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "spacesecrets"
RELEASE = "spacesecrets"
SERVICE_ACCOUNT = "spacesecrets-operator"
SA_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{SERVICE_ACCOUNT}"

NON_DEFAULT = [
    "--set",
    "allowConfigMapTargets=true",
    "--set-json",
    'watchNamespaces=["team-a","team-b"]',
    "--set",
    "metrics.serviceMonitor.enabled=true",
    "--set",
    "metrics.port=9090",
    "--set",
    "health.port=9091",
    "--set",
    "rotationPeriod=12h",
    "--set",
    "historyRetention=7d",
    "--set",
    "logFormat=json",
    "--set",
    "replicaCount=3",
    "--set",
    "image.tag=1.2.3",
    "--set-json",
    'nodeSelector={"kubernetes.io/os":"linux"}',
    "--set-json",
    'tolerations=[{"key":"dedicated","operator":"Exists","effect":"NoSchedule"}]',
    "--set-json",
    'podAnnotations={"example.com/team":"platform"}',
    "--set",
    "metrics.networkPolicy.enabled=true",
]

# Just enough of prometheus-operator's CRD for a server-side dry run of the ServiceMonitor.
SERVICE_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {
            "kind": "ServiceMonitor",
            "plural": "servicemonitors",
            "singular": "servicemonitor",
            "listKind": "ServiceMonitorList",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                        },
                    }
                },
            }
        ],
    },
}


@functools.cache
def helm_bin() -> str:
    return str(find_binaries() / "helm")


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [helm_bin(), *args], capture_output=True, text=True, check=False, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def render(
    *values: str, namespace: str = OPERATOR_NAMESPACE, include_crds: bool = False
) -> list[dict[str, Any]]:
    args = ["template", RELEASE, str(CHART), "--namespace", namespace, *values]
    if include_crds:
        args.append("--include-crds")
    return [d for d in yaml.safe_load_all(helm(*args).stdout) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def container_env(docs: list[dict[str, Any]], pod_name: str = "spacesecrets-0") -> dict[str, str]:
    """The operator container's environment, with the downward API's pod name filled in."""
    pod = find(docs, "Deployment", "spacesecrets-operator")["spec"]["template"]["spec"]
    env = {}
    for e in pod["containers"][0]["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        elif e["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[e["name"]] = pod_name
    return env


# -- rendering (no cluster) ----------------------------------------------------------------------


def test_chart_lints_with_default_and_non_default_values() -> None:
    helm("lint", "--strict", str(CHART))
    helm("lint", "--strict", str(CHART), *NON_DEFAULT)


@pytest.mark.parametrize(
    ("values", "phrase"),
    [
        (["--set", "bogus=1"], "additional properties 'bogus' not allowed"),
        (["--set", "rotationPeriod=soon"], "/rotationPeriod"),
        (["--set", "logFormat=xml"], "/logFormat"),
        (["--set", "metrics.port=70000"], "/metrics/port"),
        (["--set", "metrics.serviceMonitor.bogus=1"], "'bogus' not allowed"),
        (["--set-json", 'watchNamespaces=["Not_A_Namespace"]'], "/watchNamespaces/0"),
        (["--set", "metrics.bindAddress=localhost"], "/metrics/bindAddress"),
        (["--set", "metrics.bindAddress=10.0.0.7"], "/metrics/bindAddress"),
        (["--set-json", "metrics.networkPolicy.from=[{}]"], "/metrics/networkPolicy/from/0"),
        (
            ["--set-json", 'metrics.networkPolicy.from=[{"podSelecter":{}}]'],
            "/metrics/networkPolicy/from/0",
        ),
    ],
    ids=[
        "unknown-key",
        "bad-duration",
        "bad-log-format",
        "bad-port",
        "unknown-nested-key",
        "bad-namespace",
        "bind-address-not-an-ip",
        "bind-address-not-loopback-or-any",
        "network-policy-empty-peer",
        "network-policy-misspelt-peer",
    ],
)
def test_values_schema_rejects_bad_values(values: list[str], phrase: str) -> None:
    result = helm("template", RELEASE, str(CHART), *values, check=False)
    assert result.returncode != 0
    assert phrase in result.stderr, result.stderr


def test_refresh_pods_off_drops_the_pods_rule_and_tells_the_operator() -> None:
    docs = render("--set", "refreshPods=false")
    rules = find(docs, "ClusterRole", manifests.OPERATOR_ROLE)["rules"]
    assert all("pods" not in rule["resources"] for rule in rules)
    assert rules == [r for r in manifests.operator_rules() if "pods" not in r["resources"]]
    [container] = find(docs, "Deployment", "spacesecrets-operator")["spec"]["template"]["spec"][
        "containers"
    ]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SPACESECRETS_REFRESH_PODS"] == "false"
    on = find(render(), "Deployment", "spacesecrets-operator")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert {"name": "SPACESECRETS_REFRESH_PODS", "value": "true"} in on["env"]


@pytest.mark.parametrize(
    ("namespace", "service_account"),
    [(OPERATOR_NAMESPACE, SERVICE_ACCOUNT), ("ops", "secrets-operator")],
)
def test_rbac_and_policies_are_the_builders_output(namespace: str, service_account: str) -> None:
    docs = render("--set", f"serviceAccount.name={service_account}", namespace=namespace)

    operator_role = find(docs, "ClusterRole", manifests.OPERATOR_ROLE)
    assert operator_role["rules"] == manifests.operator_rules()
    assert find(docs, "Role", manifests.OPERATOR_ROLE)["rules"] == (
        manifests.operator_namespace_rules()
    )
    for builder in (manifests.owner_role, manifests.viewer_role):
        want = builder()
        got = find(docs, "ClusterRole", want["metadata"]["name"])
        assert got["rules"] == want["rules"]
        assert want["metadata"]["labels"].items() <= got["metadata"]["labels"].items()
    for want in public_keys_reader(namespace):
        got = find(docs, want["kind"], want["metadata"]["name"])
        assert got["metadata"]["namespace"] == namespace
        assert {k: v for k, v in got.items() if k in ("rules", "roleRef", "subjects")} == {
            k: v for k, v in want.items() if k in ("rules", "roleRef", "subjects")
        }

    subject = {"kind": "ServiceAccount", "name": service_account, "namespace": namespace}
    assert find(docs, "ClusterRoleBinding", manifests.OPERATOR_ROLE)["subjects"] == [subject]
    assert find(docs, "RoleBinding", manifests.OPERATOR_ROLE)["subjects"] == [subject]
    assert find(docs, "ServiceAccount", service_account)["metadata"]["namespace"] == namespace

    flow = manifests.shard_leases_flow(namespace, service_account)
    assert find(docs, "FlowSchema", manifests.SHARD_LEASES_FLOW)["spec"] == flow["spec"]

    policies = manifests.admission_policies(namespace, service_account)
    rendered = [d for d in docs if d["apiVersion"].startswith("admissionregistration.k8s.io/")]
    assert len(rendered) == len(policies)
    for want in policies:
        got = find(docs, want["kind"], want["metadata"]["name"])
        assert got["spec"] == want["spec"], want["metadata"]["name"]
        assert want["metadata"]["labels"].items() <= got["metadata"]["labels"].items()

    for doc in docs:
        if doc["kind"] in ("Role", "ClusterRole"):
            for rule in doc["rules"]:
                for field in ("verbs", "resources", "apiGroups", "resourceNames"):
                    assert not any("*" in item for item in rule.get(field, [])), (doc, rule)


def test_deployment_configures_the_operator_from_values() -> None:
    docs = render()
    deployment = find(docs, "Deployment", "spacesecrets-operator")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["spacesecrets", "operator"]
    assert container["image"].endswith(":0.1.0")
    assert pod["serviceAccountName"] == SERVICE_ACCOUNT
    assert Settings.from_env(container_env(docs)) == Settings(
        namespace=OPERATOR_NAMESPACE, shard_member="spacesecrets-0"
    )

    # restricted: non-root, read-only root filesystem, nothing to escalate
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["runAsUser"] == 65532
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert container["resources"]["requests"]

    # spread softly: never blocks scheduling
    anti = pod["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert {c["whenUnsatisfiable"] for c in pod["topologySpreadConstraints"]} == {"ScheduleAnyway"}

    assert find(docs, "PodDisruptionBudget", "spacesecrets-operator")["spec"]["minAvailable"] == 1
    service = find(docs, "Service", "spacesecrets-metrics")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert not [d for d in docs if d["kind"] == "ServiceMonitor"]
    # every replica an active shard: no kopf peering any more
    assert not [d for d in docs if "kopf" in json.dumps(d)]


def test_non_default_values_reach_the_operator() -> None:
    docs = render(*NON_DEFAULT)
    settings = Settings.from_env(container_env(docs))
    assert settings.allow_configmap_targets is True
    assert settings.watch_namespaces == ("team-a", "team-b")
    assert settings.rotation_period == 12 * 3600
    assert settings.history_retention == 7 * 86400
    assert settings.log_json is True
    assert (settings.metrics_port, settings.health_port) == (9090, 9091)

    deployment = find(docs, "Deployment", "spacesecrets-operator")
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["replicas"] == 3
    assert pod["metadata"]["annotations"] == {"example.com/team": "platform"}
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["spec"]["tolerations"][0]["key"] == "dedicated"
    assert pod["spec"]["containers"][0]["image"].endswith(":1.2.3")
    monitor = find(docs, "ServiceMonitor", "spacesecrets-operator")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert find(docs, "Service", "spacesecrets-metrics")["spec"]["ports"][0]["port"] == 9090

    assert find(docs, "NetworkPolicy", "spacesecrets-operator")

    shards = Settings.from_env(
        container_env(render("--set", "shards.leaseDuration=30s", "--set", "shards.renewPeriod=5s"))
    )
    assert (shards.shard_lease, shards.shard_renew) == (30, 5)


def container_ports(docs: list[dict[str, Any]]) -> dict[str, int]:
    pod = find(docs, "Deployment", "spacesecrets-operator")["spec"]["template"]["spec"]
    return {p["name"]: p["containerPort"] for p in pod["containers"][0]["ports"]}


def test_metrics_bind_address_reaches_the_operator() -> None:
    default = render()
    assert container_env(default)["SPACESECRETS_METRICS_ADDRESS"] == "0.0.0.0"
    assert find(default, "Service", "spacesecrets-metrics")

    docs = render("--set", "metrics.bindAddress=127.0.0.1")
    env = container_env(docs)
    assert env["SPACESECRETS_METRICS_ADDRESS"] == "127.0.0.1"
    assert Settings.from_env(env).metrics_address == "127.0.0.1"
    # kept inside the pod: nothing outside it can reach the port, so nothing points at it
    assert not [d for d in docs if d["kind"] in ("Service", "ServiceMonitor")]
    assert container_ports(docs) == {"health": 8081}
    assert container_env(render("--set", "metrics.bindAddress=::1"))[
        "SPACESECRETS_METRICS_ADDRESS"
    ] == ("::1")

    # a ServiceMonitor asked for with metrics Prometheus cannot reach is an error, not a no-op
    result = helm(
        "template",
        RELEASE,
        str(CHART),
        "--set",
        "metrics.bindAddress=127.0.0.1",
        "--set",
        "metrics.serviceMonitor.enabled=true",
        check=False,
    )
    assert result.returncode != 0
    assert "metrics.serviceMonitor.enabled" in result.stderr, result.stderr

    ipv6 = render("--set", "metrics.bindAddress=::", "--set", "metrics.serviceMonitor.enabled=true")
    assert container_env(ipv6)["SPACESECRETS_METRICS_ADDRESS"] == "::"
    assert find(ipv6, "ServiceMonitor", "spacesecrets-operator")
    assert container_ports(ipv6) == {"metrics": 8080, "health": 8081}


def test_network_policy_renders_only_when_enabled() -> None:
    assert not [d for d in render() if d["kind"] == "NetworkPolicy"]

    prometheus = [
        {
            "namespaceSelector": {"matchLabels": {"example.com/role": "observability"}},
            "podSelector": {"matchLabels": {"app": "prometheus-scraper"}},
        },
        {"ipBlock": {"cidr": "10.20.0.0/16"}},
    ]
    enabled = ["--set", "metrics.networkPolicy.enabled=true"]
    docs = render(*enabled, "--set-json", f"metrics.networkPolicy.from={json.dumps(prometheus)}")
    policy = find(docs, "NetworkPolicy", "spacesecrets-operator")
    deployment = find(docs, "Deployment", "spacesecrets-operator")
    assert policy["metadata"]["namespace"] == OPERATOR_NAMESPACE
    assert policy["spec"]["podSelector"] == {
        "matchLabels": deployment["spec"]["selector"]["matchLabels"]
    }
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    metrics_only_from_prometheus = {
        "from": prometheus,
        "ports": [{"port": "metrics", "protocol": "TCP"}],
    }
    health_from_anywhere = {"ports": [{"port": "health", "protocol": "TCP"}]}
    assert policy["spec"]["ingress"] == [metrics_only_from_prometheus, health_from_anywhere]
    # the policy's named ports are the container's
    assert set(container_ports(docs)) == {"metrics", "health"}

    # the default `from` is the one values.yaml documents
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["metrics"]["networkPolicy"]
    assert defaults["enabled"] is False
    policy = find(render(*enabled), "NetworkPolicy", "spacesecrets-operator")
    assert policy["spec"]["ingress"][0]["from"] == defaults["from"]

    # nobody may scrape: no metrics rule at all (a rule without `from` would admit everyone)
    for nobody in (
        ["--set-json", "metrics.networkPolicy.from=[]"],
        ["--set", "metrics.bindAddress=127.0.0.1"],
    ):
        policy = find(render(*enabled, *nobody), "NetworkPolicy", "spacesecrets-operator")
        assert policy["spec"]["ingress"] == [health_from_anywhere], nobody

    nodes = [{"ipBlock": {"cidr": "192.168.0.0/24"}}]
    docs = render(*enabled, "--set-json", f"metrics.networkPolicy.healthFrom={json.dumps(nodes)}")
    policy = find(docs, "NetworkPolicy", "spacesecrets-operator")
    assert policy["spec"]["ingress"][1] == {**health_from_anywhere, "from": nodes}


# -- a bare private control plane --------------------------------------------------------------


@pytest.fixture(scope="module")
def installed() -> Iterator[LocalCluster]:
    """A private control plane with nothing but the chart, installed as a user would."""
    cluster = LocalCluster(ControlPlane(find_binaries()))
    try:
        cluster.cp.start()
        kubeconfig = str(cluster.kubeconfig)
        helm(
            "install",
            RELEASE,
            str(CHART),
            "--namespace",
            OPERATOR_NAMESPACE,
            "--create-namespace",
            "--kubeconfig",
            kubeconfig,
        )
        yield cluster
    finally:
        cluster.stop()


def test_helm_install_and_upgrade(installed: LocalCluster) -> None:
    kubectl = installed.cp.kubectl
    kubeconfig = str(installed.kubeconfig)
    status = json.loads(
        helm(
            "status", RELEASE, "-n", OPERATOR_NAMESPACE, "--kubeconfig", kubeconfig, "-o", "json"
        ).stdout
    )
    assert status["info"]["status"] == "deployed"
    kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/spacesecrets.spacesecrets.io",
        "crd/flowsecretsyncs.spacesecrets.io",
    )
    deployment = json.loads(
        kubectl(
            "get", "deployment", "spacesecrets-operator", "-n", OPERATOR_NAMESPACE, "-o", "json"
        ).stdout
    )
    assert deployment["spec"]["replicas"] == 2
    helm(
        "upgrade",
        RELEASE,
        str(CHART),
        "--namespace",
        OPERATOR_NAMESPACE,
        "--reuse-values",
        "--kubeconfig",
        kubeconfig,
    )
    manifest = helm(
        "get", "manifest", RELEASE, "-n", OPERATOR_NAMESPACE, "--kubeconfig", kubeconfig
    ).stdout
    assert "SPACESECRETS_SHARD_MEMBER" in manifest
    assert "ClusterKopfPeering" not in manifest


def test_rendered_documents_pass_a_server_side_dry_run(installed: LocalCluster) -> None:
    installed.apply([SERVICE_MONITOR_CRD])
    installed.cp.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        f"crd/{SERVICE_MONITOR_CRD['metadata']['name']}",
    )
    # the non-default render goes to a namespace of its own: merged by server-side apply into the
    # installed Deployment, its ports would sit next to the installed ones
    installed.cp.kubectl("create", "namespace", "chart-dry-run")
    for values, namespace in (([], OPERATOR_NAMESPACE), (NON_DEFAULT, "chart-dry-run")):
        docs = render(*values, namespace=namespace, include_crds=True)
        result = installed.cp.kubectl(
            "apply",
            "--dry-run=server",
            "--server-side",
            "--force-conflicts",
            "--field-manager=chart-test",
            "-f",
            "-",
            input=yaml.safe_dump_all(docs),
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("serverside-applied (server dry run)") == len(docs), (
            result.stdout
        )
        assert "ServiceMonitor" in {d["kind"] for d in docs} or not values


def _audit_denials(cluster: LocalCluster, user: str) -> list[str]:
    denied = []
    for line in cluster.cp.audit_log.read_text().splitlines():
        event = json.loads(line)
        if (
            event.get("user", {}).get("username") == user
            and event.get("responseStatus", {}).get("code") == 403
        ):
            denied.append(f"{event['verb']} {event['requestURI']}")
    return denied


def test_operator_runs_with_exactly_the_chart_rbac(installed: LocalCluster) -> None:
    cp = installed.cp
    token = cp.kubectl(
        "create", "token", SERVICE_ACCOUNT, "-n", OPERATOR_NAMESPACE, "--duration=2h"
    ).stdout.strip()
    kubeconfig = cp.token_kubeconfig(SA_USER, token)
    operator = installed.start_operator(
        kubeconfig=kubeconfig,
        env={
            "SPACESECRETS_SHARD_MEMBER": "chart-0",
            "SPACESECRETS_AUTOSYNC_SCALE": "0.05",
        },
    )
    try:
        kube = kube_for(str(installed.kubeconfig))
        cp.kubectl("create", "namespace", "team-chart")
        space = Space(installed, kube, "team-chart")
        space.apply({"API_HOST": "api.example.com", "CONFIG": {"retries": 3}})
        space.wait_version(1, timeout=60)
        space.wait_condition("Ready", "True")

        space.kubectl_apply(space.flow("orders", "orders-secrets"))
        space.wait_condition("Synced", "True", name="orders", plural="flowsecretsyncs")
        assert space.target_documents("orders-secrets")["SECRETS"]["API_HOST"] == (
            "api.example.com"
        )

        space.apply({"API_HOST": "api2.example.com", "CONFIG": {"retries": 3}})
        space.wait_version(2)
        wait_for(
            "the flow target at version 2",
            lambda: (
                kube.get_custom("flowsecretsyncs", space.ns, "orders")
                .get("status", {})
                .get("syncedVersion")
                == 2
            ),
        )
        assert space.target_documents("orders-secrets")["SECRETS"]["API_HOST"] == (
            "api2.example.com"
        )

        cp.kubectl("delete", "spacesecrets", space.name, "-n", space.ns, "--timeout=60s")
        # the operator is a member of the ring, with its own Lease
        lease = json.loads(
            cp.kubectl(
                "get", "lease", "spacesecrets-shard-chart-0", "-n", OPERATOR_NAMESPACE, "-o", "json"
            ).stdout
        )
        assert lease["spec"]["holderIdentity"] == "chart-0"
    finally:
        operator.stop()
    log = operator.log_text()
    assert denials(log) == [], log[-5000:]
    assert _audit_denials(installed, SA_USER) == []


def test_both_replicas_serve_and_one_takes_over_the_others_share(installed: LocalCluster) -> None:
    cp = installed.cp
    token = cp.kubectl(
        "create", "token", SERVICE_ACCOUNT, "-n", OPERATOR_NAMESPACE, "--duration=1h"
    ).stdout.strip()
    kubeconfig = cp.token_kubeconfig(SA_USER, token)
    fast = {"SPACESECRETS_SHARD_LEASE": "6s", "SPACESECRETS_SHARD_RENEW": "1s"}
    replicas = {
        member: installed.start_operator(
            kubeconfig=kubeconfig, env={**fast, "SPACESECRETS_SHARD_MEMBER": member}
        )
        for member in ("replica-0", "replica-1")
    }
    try:
        cp.kubectl("create", "namespace", "team-replicas")
        space = Space(installed, kube_for(str(installed.kubeconfig)), "team-replicas")
        space.apply({"API_HOST": "api.example.com"})
        space.wait_version(1, timeout=20)
        # the replica the ring gives the namespace to served it; SIGKILL it
        serving = sharding.owner(space.ns, replicas)
        assert serving is not None and "version 1:" in replicas[serving].log_text()
        other = next(r for m, r in replicas.items() if m != serving)
        assert "version 1:" not in other.log_text()
        replicas[serving].kill()
        killed_at = time.monotonic()
        space.apply({"API_HOST": "api2.example.com"})
        obj = space.wait_version(2, timeout=30)
        assert time.monotonic() - killed_at < 12, "the other replica took over within 12 s"
        assert "version 2:" in other.log_text()
        # no version was given twice: the history lists each version once
        versions = [h["version"] for h in obj["status"]["history"]]
        assert versions == sorted(set(versions), reverse=True) == [2, 1]
    finally:
        for replica in replicas.values():
            replica.stop()


def test_operator_binds_the_metrics_address_the_chart_sets(installed: LocalCluster) -> None:
    env = container_env(render("--set", "metrics.bindAddress=127.0.0.1"))
    cp = installed.cp
    token = cp.kubectl(
        "create", "token", SERVICE_ACCOUNT, "-n", OPERATOR_NAMESPACE, "--duration=1h"
    ).stdout.strip()
    operator = installed.start_operator(
        kubeconfig=cp.token_kubeconfig(SA_USER, token),
        env={
            "SPACESECRETS_SHARD_MEMBER": "metrics-0",
            "SPACESECRETS_METRICS_ADDRESS": env["SPACESECRETS_METRICS_ADDRESS"],
        },
    )
    try:
        assert "spacesecrets_key_ring_age_seconds" in operator.metrics()  # on 127.0.0.1

        # 127.0.0.2 is local too (all of 127.0.0.0/8 is `lo`): the health endpoint, bound to
        # every address, answers there; the metrics port refuses
        def connects(port: int) -> bool:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                return sock.connect_ex(("127.0.0.2", port)) == 0

        assert connects(operator.health_port)
        assert not connects(operator.metrics_port)
    finally:
        operator.stop()
