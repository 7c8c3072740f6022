"""Operator configuration, read once from the environment and passed into the core.

Pure core: builders never read globals; handlers hand them a `Settings`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

# Limits chosen so a space fits everywhere it is copied: kubectl's client-side apply annotation
# (256 KiB of annotations), the projected Secret (1 MiB) and the encrypted history Secret.
MAX_VALUE_BYTES = 64 * 1024
MAX_TOTAL_BYTES = 192 * 1024
MAX_PROJECTION_BYTES = 768 * 1024
HISTORY_BUDGET_BYTES = 900 * 1024
# How deeply arrays and objects may nest in a JSON value (a scalar is 0): far beyond any config a
# flow reads, and far below the depth at which a recursive parser -- Python's, or the one in a
# flow's runtime -- runs out of stack.
MAX_JSON_DEPTH = 32

DEFAULT_METRICS_ADDRESS = "0.0.0.0"  # noqa: S104 -- scraped in-cluster by default
DEFAULT_HEALTH_ADDRESS = "0.0.0.0"  # noqa: S104 -- the kubelet probes the pod's IP


class SettingsError(ValueError):
    """A configuration value is malformed."""


def parse_duration(text: str) -> float:
    """'30d', '12h', '1m', '2.5s', '250ms' -> seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise SettingsError(f"not a duration: {text!r} (use e.g. 30d, 12h, 1m, 10s)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _address(env: Mapping[str, str] | None, name: str, default: str, hint: str) -> str:
    env = os.environ if env is None else env
    text = env.get(name, "").strip() or default
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise SettingsError(f"{name} is not an IP address: {text!r} ({hint})") from None


def metrics_address(env: Mapping[str, str] | None = None) -> str:
    """The address /metrics listens on (SPACESECRETS_METRICS_ADDRESS), an IP address.

    0.0.0.0 (the default) lets Prometheus scrape the pod; 127.0.0.1 keeps the metrics inside the
    pod, for a sidecar or `kubectl port-forward`.
    """
    return _address(
        env,
        "SPACESECRETS_METRICS_ADDRESS",
        DEFAULT_METRICS_ADDRESS,
        "use 0.0.0.0, or 127.0.0.1 to keep metrics inside the pod",
    )


def health_address(env: Mapping[str, str] | None = None) -> str:
    """The address /healthz listens on (SPACESECRETS_HEALTH_ADDRESS), an IP address.

    0.0.0.0 (the default) is what the kubelet's HTTP liveness probe needs: it connects to the pod's
    IP. 127.0.0.1 suits an operator run outside a pod, or a pod probed by an exec command.
    """
    return _address(
        env,
        "SPACESECRETS_HEALTH_ADDRESS",
        DEFAULT_HEALTH_ADDRESS,
        "use 0.0.0.0 for the kubelet's probes, or 127.0.0.1 outside a pod",
    )


def liveness_url(address: str, port: int) -> str:
    """The URL kopf serves /healthz on (an IPv6 address in brackets)."""
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}/healthz"


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    """Everything the operator can be configured with (env var names in `from_env`)."""

    namespace: str = "spacesecrets-system"
    keyring_secret: str = "spacesecrets-keyring"
    public_keys_configmap: str = "spacesecrets-public-keys"
    rotation_period: float = 30 * 86400.0
    history_retention: float = 30 * 86400.0
    allow_configmap_targets: bool = False
    refresh_pods: bool = True  # nudge the pods that mount an updated target (engine.pods)
    autosync_scale: float = 1.0
    watch_namespaces: tuple[str, ...] = field(default_factory=tuple)
    metrics_port: int = 8080
    metrics_address: str = DEFAULT_METRICS_ADDRESS
    health_port: int = 8081
    health_address: str = DEFAULT_HEALTH_ADDRESS
    peering: str = ""
    log_json: bool = False
    # shards (engine.shards): this process's member id; empty runs one process for everything
    shard_member: str = ""
    shard_lease: float = 15.0  # a member's Lease not renewed for this long: the member is dead
    shard_renew: float = 3.0

    def liveness_url(self) -> str:
        """The URL kopf serves /healthz on: SPACESECRETS_HEALTH_ADDRESS and _PORT."""
        return liveness_url(self.health_address, self.health_port)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        get = env.get
        namespaces = tuple(n for n in get("SPACESECRETS_WATCH_NAMESPACES", "").split(",") if n)
        member, lease, renew = _shard_settings(env)
        try:
            return cls(
                namespace=get("SPACESECRETS_NAMESPACE", cls.namespace),
                rotation_period=parse_duration(get("SPACESECRETS_ROTATION_PERIOD", "30d")),
                history_retention=parse_duration(get("SPACESECRETS_HISTORY_RETENTION", "30d")),
                allow_configmap_targets=_flag(get("SPACESECRETS_ALLOW_CONFIGMAP_TARGETS", "")),
                refresh_pods=_flag(get("SPACESECRETS_REFRESH_PODS", "true")),
                autosync_scale=float(get("SPACESECRETS_AUTOSYNC_SCALE", "1")),
                watch_namespaces=namespaces,
                metrics_port=int(get("SPACESECRETS_METRICS_PORT", "8080")),
                metrics_address=metrics_address(env),
                health_port=int(get("SPACESECRETS_HEALTH_PORT", "8081")),
                health_address=health_address(env),
                peering=get("SPACESECRETS_PEERING", ""),
                log_json=get("SPACESECRETS_LOG_FORMAT", "text") == "json",
                shard_member=member,
                shard_lease=lease,
                shard_renew=renew,
            )
        except ValueError as exc:
            raise SettingsError(str(exc)) from exc


def _shard_settings(env: Mapping[str, str]) -> tuple[str, float, float]:
    member = env.get("SPACESECRETS_SHARD_MEMBER", "").strip()
    lease = parse_duration(env.get("SPACESECRETS_SHARD_LEASE", "15s"))
    renew = parse_duration(env.get("SPACESECRETS_SHARD_RENEW", "3s"))
    if member and env.get("SPACESECRETS_PEERING"):
        raise SettingsError(
            "SPACESECRETS_SHARD_MEMBER and SPACESECRETS_PEERING exclude each other: with shards "
            "every replica is active"
        )
    if member and not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,180}[a-z0-9])?", member):
        raise SettingsError(f"SPACESECRETS_SHARD_MEMBER is not a DNS name: {member!r}")
    if renew * 3 > lease:
        raise SettingsError(
            f"SPACESECRETS_SHARD_RENEW ({renew:g}s) must be at most a third of "
            f"SPACESECRETS_SHARD_LEASE ({lease:g}s)"
        )
    return member, lease, renew
