"""The flow side: what a flow's own process imports to read the documents spacesecrets mounts.

Layer: flow-side client library, standard library only; imports nothing else of spacesecrets, so a
flow pod needs no other dependency.
"""

from spacesecrets.flow.reader import (
    AUTOSYNC_CHOICES,
    DEFAULT_DIRECTORY,
    FlowSecrets,
    FlowSecretsError,
    SecretsUnavailableError,
    Snapshot,
    parse_autosync,
)

__all__ = [
    "AUTOSYNC_CHOICES",
    "DEFAULT_DIRECTORY",
    "FlowSecrets",
    "FlowSecretsError",
    "SecretsUnavailableError",
    "Snapshot",
    "parse_autosync",
]
