"""Refreshing the pods that mount a target the operator has just updated.

Engine layer. Which pods, and the one-annotation patch, are `core.mounts`. The kubelet syncs a pod
whenever the pod object changes, and a sync brings its Secret and ConfigMap volumes up to date; so
one small patch per running pod turns kubelet's periodic resync (`syncFrequency`, 1m by default)
into a refresh within a second. Best effort: a pod gone, a refusal or an API hiccup costs the pod
only the wait for its kubelet's own resync, never the projection.
"""

from __future__ import annotations

import logging
import threading

from spacesecrets.core import mounts
from spacesecrets.engine.metrics import Metrics
from spacesecrets.kube import NotFound, Permanent, Temporary
from spacesecrets.kube.client import Kube

log = logging.getLogger("spacesecrets")


class PodRefresher:
    def __init__(self, kube: Kube, metrics: Metrics, *, enabled: bool) -> None:
        self.kube, self.metrics, self.enabled = kube, metrics, enabled
        self._refused = threading.Event()  # warned once that RBAC or a policy refuses it

    def refresh(self, namespace: str, kind: str, name: str, revision: str) -> int:
        """Nudge the running pods of `namespace` that mount `kind` `name`, now at `revision`;
        how many were nudged."""
        if not self.enabled or self._refused.is_set():
            return 0
        try:
            chosen = mounts.to_refresh(self.kube.list_running_pods(namespace), kind, name, revision)
        except Permanent as exc:
            self._refusal(exc)
            return 0
        except Temporary as exc:
            log.info("pods mounting %s %s/%s not refreshed: %s", kind, namespace, name, exc)
            return 0
        done = 0
        for pod in chosen:
            try:
                self.kube.patch_pod(namespace, pod, mounts.refresh_patch(revision))
            except NotFound:
                continue  # deleted since the list: its replacement mounts the new documents
            except Permanent as exc:
                self._refusal(exc)
                break
            except Temporary as exc:
                log.info("pod %s/%s not refreshed: %s", namespace, pod, exc)
                continue
            done += 1
        self.metrics.pod_refreshes.inc(done)
        return done

    def _refusal(self, exc: Permanent) -> None:
        if not self._refused.is_set():
            self._refused.set()
            log.warning(
                "pods are not refreshed after a target update (%s): they see a change at their "
                "kubelet's resync instead; grant the operator list and patch on pods, or set "
                "SPACESECRETS_REFRESH_PODS=false",
                exc,
            )
