"""The pure core: crypto, versions and history, projection, access, provenance, conditions,
schedule, settings and the decisions. No I/O library, no kopf, no Kubernetes client: everything
here is a function of its arguments and is unit-tested without a cluster."""
