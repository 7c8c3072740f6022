"""The API's schema: the pydantic models, the CRDs generated from them, and the cluster-scoped
manifests (roles, admission policies) the CRDs ship with. The only place pydantic lives; the
operator does not import it at run time."""
