"""Talking to the Kubernetes API: the transport (`transport`), one error tree (`errors`), the client
of the objects spacesecrets reads and writes (`client.Kube`), the Event queue (`events`), and the
official client's factory for the CLI and tooling (`factory`).

The package itself exports the error tree only, so that catching an API error loads no HTTP
client.
"""

from spacesecrets.kube.errors import (
    AlreadyExists,
    ApiError,
    NamespaceTerminating,
    NotFound,
    Permanent,
    Temporary,
)

__all__ = [
    "AlreadyExists",
    "ApiError",
    "NamespaceTerminating",
    "NotFound",
    "Permanent",
    "Temporary",
]
