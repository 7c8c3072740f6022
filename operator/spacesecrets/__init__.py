"""spacesecrets: an owner-managed, versioned, encrypted store of secrets for each namespace.

The package is layered: a pure core (models, crypto, versions, projection, access, conditions,
schedule, crdgen, manifests, settings, flow, kubelet) that imports neither kopf nor kubernetes,
and thin edges (kube, reconcile, handlers, cli, dev, demo, controlplane) that talk to the API
server. An import-linter contract enforces the split.
"""

__version__ = "0.1.0"

GROUP = "spacesecrets.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
MANAGED_BY = "spacesecrets"
