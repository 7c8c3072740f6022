"""The `spacesecrets` command (also `kubectl spacesecrets`): the operator, the local dev cluster,
and the owners' tools (pubkey, seal, set, unset, list, history, rollback, approve, status,
and `ui`, the Secrets tab in a browser).

Edge. User mistakes end in one clear line on stderr and a non-zero exit, never a traceback.
Values are read from stdin or files and sealed locally: no plaintext ever goes to the API server.
"""

from spacesecrets.cli import run, sealing, space, ui  # noqa: F401 -- each registers its commands
from spacesecrets.cli.app import UserError, main

__all__ = ["UserError", "main"]
