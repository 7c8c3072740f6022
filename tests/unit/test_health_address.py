"""The liveness endpoint's bind address: read from SPACESECRETS_HEALTH_ADDRESS, like the metrics
address, and handed to kopf as the URL it serves /healthz on."""

from __future__ import annotations

import pytest

from spacesecrets.core.settings import Settings, SettingsError, liveness_url


def test_the_default_is_every_address_so_the_kubelet_can_probe() -> None:
    assert Settings.from_env({}).health_address == "0.0.0.0"
    assert Settings().health_address == "0.0.0.0"
    assert liveness_url("0.0.0.0", 8081) == "http://0.0.0.0:8081/healthz"


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8081/healthz"),
        (" 10.1.2.3 ", "http://10.1.2.3:8081/healthz"),
        ("::", "http://[::]:8081/healthz"),
        ("fd00::0:1", "http://[fd00::1]:8081/healthz"),
    ],
)
def test_the_address_is_a_setting(value: str, url: str) -> None:
    settings = Settings.from_env({"SPACESECRETS_HEALTH_ADDRESS": value})
    assert liveness_url(settings.health_address, settings.health_port) == url
    assert settings.liveness_url() == url  # what the operator hands kopf


def test_an_address_that_is_not_an_ip_is_refused() -> None:
    with pytest.raises(SettingsError, match="SPACESECRETS_HEALTH_ADDRESS is not an IP address"):
        Settings.from_env({"SPACESECRETS_HEALTH_ADDRESS": "localhost"})
