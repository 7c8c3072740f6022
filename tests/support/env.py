"""The environment the shared operator runs with: its fixture, and tests that start their own."""

from __future__ import annotations

# One autosync "minute" is 3 s for the shared operator; the real 1m schedule has its own test.
FAST_ENV = {"SPACESECRETS_AUTOSYNC_SCALE": "0.05", "SPACESECRETS_ALLOW_CONFIGMAP_TARGETS": "true"}
