"""Names that the API, the operator, the CLI and the tests share: labels, annotations, plurals.

Standard library only, imported by every layer. A name is written here once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

SPACES: Final = "spacesecrets"
FLOWS: Final = "flowsecretsyncs"

MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
FLOW_LABEL: Final = "spacesecrets.io/flow"  # on a target: the FlowSecretSync it belongs to
SPACE_LABEL: Final = "spacesecrets.io/space"  # on a history: the namespace it belongs to
ARCHIVE_LABEL: Final = "spacesecrets.io/archived-space"  # a deleted space's history set aside

VERSION_ANNOTATION: Final = "spacesecrets.io/version"  # on a target: the version it holds
ISSUED_ANNOTATION: Final = "spacesecrets.io/issued-at"
ROLLBACK_ANNOTATION: Final = "spacesecrets.io/rollback-to"  # set by an owner: restore version N
# set by the operator beside a rollback: which version the new one restores
RESTORED_ANNOTATION: Final = "spacesecrets.io/restored-from"
RESTORE_FROM: Final = "spacesecrets.io/restore-from"  # on a new SpaceSecrets: a deleted one's uid
CREATED_BY: Final = "spacesecrets.io/created-by"  # stamped by the API server on a SpaceSecrets
AUTHORIZED_BY: Final = "spacesecrets.io/authorized-by"  # stamped by the API server on a flow
APPROVE: Final = "spacesecrets.io/approve"  # set or changed by an owner: the flow is approved

# The autosync choices (seconds), from the one table the flow reader and the Node-RED node share.
_AUTOSYNC: Final = json.loads((Path(__file__).parent / "flow" / "autosync.json").read_text())
AUTOSYNC_SECONDS: Final[dict[str, int]] = {str(k): int(v) for k, v in _AUTOSYNC["seconds"].items()}
DEFAULT_AUTOSYNC: Final[str] = str(_AUTOSYNC["default"])
