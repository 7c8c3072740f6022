"""Sealing, the key ring and history encryption: pure, no cluster."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization

from spacesecrets.core import crypto

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def ring() -> crypto.KeyRing:
    return crypto.KeyRing.create(NOW)


def test_round_trip(ring: crypto.KeyRing) -> None:
    sealed = crypto.seal(ring.current.public, "team-a", "API_KEY", "text", b"s3cret")
    assert sealed.startswith(f"hpke1:{ring.current.kid}:")
    assert b"s3cret" not in sealed.encode()
    assert ring.unseal("team-a", "API_KEY", "text", sealed) == b"s3cret"


def test_kid_is_sha256_of_raw_public_key(ring: crypto.KeyRing) -> None:
    raw = crypto.raw_public(ring.current.public)
    assert len(raw) == 32
    assert ring.current.kid == hashlib.sha256(raw).hexdigest()[:16]


def test_wire_format_is_standard_hpke(ring: crypto.KeyRing) -> None:
    """enc (32 bytes) || AES-256-GCM ciphertext with its 16-byte tag, base64 standard."""
    sealed = crypto.seal(ring.current.public, "ns", "K", "json", b"{}")
    blob = base64.b64decode(sealed.split(":")[2], validate=True)
    assert len(blob) == 32 + 2 + 16
    assert crypto.info_for("ns", "K", "json") == b"spacesecrets.io/v1alpha1:ns:K:json"


@pytest.mark.parametrize(
    ("namespace", "key", "fmt"),
    [("team-b", "API_KEY", "text"), ("team-a", "OTHER_KEY", "text"), ("team-a", "API_KEY", "json")],
    ids=["other-namespace", "renamed-key", "retyped"],
)
def test_opening_fails_when_scope_differs(
    ring: crypto.KeyRing, namespace: str, key: str, fmt: str
) -> None:
    sealed = crypto.seal(ring.current.public, "team-a", "API_KEY", "text", b"v")
    with pytest.raises(crypto.UnsealError) as info:
        ring.unseal(namespace, key, fmt, sealed)
    assert info.value.reason == crypto.CANNOT_OPEN
    assert "v" not in str(info.value).split()  # the message never carries the value


def test_any_changed_byte_fails(ring: crypto.KeyRing) -> None:
    sealed = crypto.seal(ring.current.public, "ns", "K", "text", b"value")
    prefix, kid, b64 = sealed.split(":")
    blob = base64.b64decode(b64)
    for i in range(len(blob)):  # every byte of enc and of the ciphertext
        tampered = bytearray(blob)
        tampered[i] ^= 0x01
        with pytest.raises(crypto.UnsealError) as info:
            ring.unseal("ns", "K", "text", f"{prefix}:{kid}:{base64.b64encode(tampered).decode()}")
        assert info.value.reason == crypto.CANNOT_OPEN


def test_changed_kid_is_unknown(ring: crypto.KeyRing) -> None:
    sealed = crypto.seal(ring.current.public, "ns", "K", "text", b"value")
    prefix, kid, b64 = sealed.split(":")
    other = ("0" if kid[0] != "0" else "1") + kid[1:]
    with pytest.raises(crypto.UnsealError) as info:
        ring.unseal("ns", "K", "text", f"{prefix}:{other}:{b64}")
    assert info.value.reason == crypto.UNKNOWN_KID


@pytest.mark.parametrize(
    "sealed",
    [
        "hpke1:abc:AAAA",
        "hpke1:0123456789abcdef:!!!!",
        "hpke1:0123456789abcdef:AAAA",
        "plain",
        "hpke2:x:y",
    ],
)
def test_malformed(ring: crypto.KeyRing, sealed: str) -> None:
    with pytest.raises(crypto.UnsealError) as info:
        ring.unseal("ns", "K", "text", sealed)
    assert info.value.reason == crypto.MALFORMED


def test_rotated_out_key_still_opens(ring: crypto.KeyRing) -> None:
    old = crypto.seal(ring.current.public, "ns", "K", "text", b"old")
    rotated = ring.rotated(NOW + dt.timedelta(days=31))
    assert rotated.current.kid != ring.current.kid
    assert rotated.unseal("ns", "K", "text", old) == b"old"
    assert crypto.KeyRing.from_json(rotated.to_json()).unseal("ns", "K", "text", old) == b"old"


def test_rotation_period(ring: crypto.KeyRing) -> None:
    assert not ring.needs_rotation(NOW + dt.timedelta(days=29), 30 * 86400)
    assert ring.needs_rotation(NOW + dt.timedelta(days=30), 30 * 86400)


def test_public_key_pem_round_trip(ring: crypto.KeyRing) -> None:
    pem = crypto.public_key_pem(ring.current.public)
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert crypto.kid_of(crypto.load_public_key_pem(pem)) == ring.current.kid


def test_history_encryption_binds_namespace_and_version(ring: crypto.KeyRing) -> None:
    data_key = crypto.new_data_key()
    wrapped = ring.wrap("ns", data_key)
    assert ring.unwrap("ns", wrapped) == data_key
    with pytest.raises(Exception):  # noqa: PT011 -- InvalidTag
        ring.unwrap("other", wrapped)
    blob = crypto.encrypt_version(data_key, "ns", 3, b"plain")
    assert crypto.decrypt_version(data_key, "ns", 3, blob) == b"plain"
    for ns, version in (("ns", 4), ("other", 3)):
        with pytest.raises(Exception):  # noqa: PT011 -- InvalidTag
            crypto.decrypt_version(data_key, ns, version, blob)


def test_rewrap_after_master_rotation(ring: crypto.KeyRing) -> None:
    data_key = crypto.new_data_key()
    wrapped = ring.wrap("ns", data_key)
    rotated = ring.rotated(NOW + dt.timedelta(days=31))
    assert not rotated.wrapped_by_current(wrapped)
    assert rotated.unwrap("ns", wrapped) == data_key


def test_digest_is_keyed_and_covers_format() -> None:
    k1, k2 = crypto.digest_key(b"a" * 32), crypto.digest_key(b"b" * 32)
    assert crypto.digest(k1, "text", b"v") == crypto.digest(k1, "text", b"v")
    assert crypto.digest(k1, "text", b"v") != crypto.digest(k2, "text", b"v")
    assert crypto.digest(k1, "text", b"1") != crypto.digest(k1, "json", b"1")


def test_repr_shows_no_key_material() -> None:
    """A ring in a log line, a traceback or a debugger shows kids, ids and dates only."""
    ring = crypto.KeyRing.create(NOW).rotated(NOW)
    secrets: list[bytes] = [m.secret for m in ring.masters]
    secrets += [
        k.private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        for k in ring.sealing
    ]
    shown = [repr(ring), str(ring), *map(repr, ring.masters), *map(repr, ring.sealing)]
    for text in shown:
        for secret in secrets:
            for form in (secret.hex(), base64.b64encode(secret).decode(), repr(secret)[2:-1]):
                assert form not in text
        assert "secret=" not in text and "private=" not in text
    assert ring.current.kid in repr(ring) and ring.master.id in repr(ring)
