"""Generate the CustomResourceDefinitions from the pydantic models.

Pure core. pydantic's JSON schema is turned into a Kubernetes *structural* schema: `$ref`s inlined,
`Optional` collapsed, titles dropped, and a description demanded on every field so that
`kubectl explain` teaches. `make crds` writes the result to `crds/`; a test proves the files match.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from spacesecrets import GROUP, VERSION
from spacesecrets.schema import manifests
from spacesecrets.schema.models import (
    FlowSecretSync,
    FlowSecretSyncSpec,
    FlowSecretSyncStatus,
    SpaceSecrets,
    SpaceSecretsSpec,
    SpaceSecretsStatus,
)

CATEGORY = "spacesecrets-all"  # not the plural: kubectl would expand it in place of the kind
_DROPPED = {"title", "$defs"}


class SchemaError(ValueError):
    """The models cannot be expressed as a structural schema (a bug in models.py)."""


def structural(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a model."""
    schema = model.model_json_schema(mode="validation")
    return _convert(schema, schema.get("$defs", {}), model.__name__)


def _convert(node: Mapping[str, Any], defs: Mapping[str, Any], path: str) -> dict[str, Any]:
    node = _resolve(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or (key == "default" and value is None):
            continue
        if key == "additionalProperties" and value is False:
            continue  # unknown fields are pruned by the API server and refused by kubectl
        if key == "properties":
            out[key] = {}
            for name, sub in value.items():
                converted = _convert(sub, defs, f"{path}.{name}")
                if not converted.get("description"):
                    raise SchemaError(f"{path}.{name} has no description")
                out[key][name] = converted
        elif key in ("items", "additionalProperties"):
            out[key] = _convert(value, defs, f"{path}[]")
        else:
            out[key] = value
    return out


def _resolve(node: Mapping[str, Any], defs: Mapping[str, Any]) -> dict[str, Any]:
    """Inline `$ref` and collapse `anyOf: [X, null]` into X, keeping the outer keys."""
    merged = dict(node)
    if "anyOf" in merged:
        branches = [b for b in merged.pop("anyOf") if b.get("type") != "null"]
        if len(branches) != 1:
            raise SchemaError(f"unions are not structural: {branches}")
        merged = {**_resolve(branches[0], defs), **merged}
    if "$ref" in merged:
        target = defs[merged.pop("$ref").rsplit("/", 1)[-1]]
        inner = _resolve(target, defs)
        merged = {**inner, **merged}
    return merged


def _object_schema(
    description: str, spec: type[BaseModel], status: type[BaseModel]
) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "The API version, " + f"{GROUP}/{VERSION}.",
            },
            "kind": {"type": "string", "description": "The kind of the object."},
            "metadata": {"type": "object"},
            "spec": structural(spec),
            "status": structural(status),
        },
    }


def _crd(
    kind: str,
    plural: str,
    short_names: list[str],
    schema: dict[str, Any],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "spacesecrets"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def _condition_column(name: str, condition: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{condition}")].status',
        "description": f"The status of the {condition} condition.",
    }


def space_secrets_crd() -> dict[str, Any]:
    schema = _object_schema(SpaceSecrets.__doc__ or "", SpaceSecretsSpec, SpaceSecretsStatus)
    columns = [
        {
            "name": "Version",
            "type": "integer",
            "jsonPath": ".status.version",
            "description": "The space version.",
        },
        {
            "name": "Keys",
            "type": "integer",
            "jsonPath": ".status.keyCount",
            "description": "How many keys the space holds.",
        },
        {
            "name": "Updated",
            "type": "date",
            "jsonPath": ".status.updatedAt",
            "description": "When the secrets last changed.",
        },
        _condition_column("Ready", "Ready"),
    ]
    return _crd("SpaceSecrets", "spacesecrets", ["spsec"], schema, columns)


def flow_secret_sync_crd() -> dict[str, Any]:
    schema = _object_schema(FlowSecretSync.__doc__ or "", FlowSecretSyncSpec, FlowSecretSyncStatus)
    columns = [
        {
            "name": "Target",
            "type": "string",
            "jsonPath": ".spec.target.name",
            "description": "The Secret or ConfigMap the flow mounts.",
        },
        {
            "name": "Autosync",
            "type": "string",
            "jsonPath": ".spec.autosync",
            "description": "The autosync period.",
        },
        {
            "name": "Version",
            "type": "integer",
            "jsonPath": ".status.syncedVersion",
            "description": "The space version the flow was issued.",
        },
        {
            "name": "Issued",
            "type": "date",
            "jsonPath": ".status.issuedAt",
            "description": "When the flow was issued that version.",
        },
        _condition_column("Synced", "Synced"),
    ]
    return _crd("FlowSecretSync", "flowsecretsyncs", ["fss"], schema, columns)


_MODELS = "operator/spacesecrets/schema/models.py"
_MANIFESTS = "operator/spacesecrets/schema/manifests.py"


def render(crd: Mapping[str, Any]) -> str:
    """The YAML text `make crds` writes for one CRD."""
    header = f"# Generated from {_MODELS} by `make crds`. Do not edit.\n"
    return header + yaml.safe_dump(dict(crd), sort_keys=False, width=100)


def render_all(docs: list[dict[str, Any]]) -> str:
    header = f"# Generated from {_MANIFESTS} by `make crds`. Do not edit.\n"
    return header + yaml.safe_dump_all(docs, sort_keys=False, width=100)


def all_crds() -> dict[str, str]:
    """File name -> YAML text of everything shipped in `crds/`: the CRDs, the owner and viewer
    ClusterRoles and the admission policy enforcing owners."""
    return {
        f"{GROUP}_spacesecrets.yaml": render(space_secrets_crd()),
        f"{GROUP}_flowsecretsyncs.yaml": render(flow_secret_sync_crd()),
        "rbac.yaml": render_all([manifests.owner_role(), manifests.viewer_role()]),
        "admission-policy.yaml": render_all(manifests.admission_policies()),
    }


_RELEASE_NAMESPACE = "RELEASE-NAMESPACE-PLACEHOLDER"
_SERVICE_ACCOUNT = "SERVICE-ACCOUNT-PLACEHOLDER"
_PLAIN_LABELS = "  labels:\n    app.kubernetes.io/part-of: spacesecrets\n"
CHART_POLICY_TEMPLATE = "admission-policy.yaml"


def chart_admission_template() -> str:
    """The chart's admission policies: the same builders' output, with the operator's identity
    taken from the release (its namespace and ServiceAccount) and the chart's labels."""
    text = yaml.safe_dump_all(
        manifests.admission_policies(_RELEASE_NAMESPACE, _SERVICE_ACCOUNT),
        sort_keys=False,
        width=100,
    )
    text = text.replace(_RELEASE_NAMESPACE, "{{ .Release.Namespace }}")
    text = text.replace(_SERVICE_ACCOUNT, '{{ include "spacesecrets.serviceAccountName" . }}')
    text = text.replace(
        _PLAIN_LABELS, '  labels:\n    {{- include "spacesecrets.labels" . | nindent 4 }}\n'
    )
    header = (
        f"# Generated from {_MANIFESTS} by `make crds`. Do not edit.\n"
        "# Owners are enforced inside the API server (no webhook to be down); the operator's\n"
        "# identity is this release's namespace and ServiceAccount.\n"
    )
    return header + text


NODE_RED_AUTOSYNC = "autosync.json"


def node_red_autosync() -> str:
    """The Node-RED node's copy of the autosync table (it cannot import Python)."""
    from spacesecrets.names import AUTOSYNC_SECONDS, DEFAULT_AUTOSYNC

    return json.dumps({"default": DEFAULT_AUTOSYNC, "seconds": AUTOSYNC_SECONDS}, indent=2) + "\n"


def write(
    directory: Path,
    chart_crds: Path | None = None,
    chart_templates: Path | None = None,
    node_red: Path | None = None,
) -> list[Path]:
    """Write `all_crds()` into `directory`, the CRDs alone into the chart's `crds/`, and the
    admission policies into the chart's templates."""
    paths = []
    targets = [(directory, all_crds())]
    if chart_crds is not None:
        targets.append((chart_crds, {n: t for n, t in all_crds().items() if n.startswith(GROUP)}))
    if chart_templates is not None:
        targets.append((chart_templates, {CHART_POLICY_TEMPLATE: chart_admission_template()}))
    if node_red is not None:
        targets.append((node_red, {NODE_RED_AUTOSYNC: node_red_autosync()}))
    for folder, files in targets:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            path = folder / name
            path.write_text(text)
            paths.append(path)
    return paths
