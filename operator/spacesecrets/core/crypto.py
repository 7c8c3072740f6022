"""Sealing, the operator key ring, and envelope encryption of the version history.

Pure core: `cryptography` only, no Kubernetes. The wire format is standard HPKE (RFC 9180, base
mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM) so any RFC 9180 library can seal:

    info   = "spacesecrets.io/v1alpha1:" + namespace + ":" + KEY + ":" + format   (UTF-8)
    aad    = empty
    sealed = "hpke1:" + kid + ":" + base64(enc || ciphertext)
    kid    = first 16 hex digits of SHA-256 of the raw 32-byte X25519 public key

Binding the namespace, KEY and format into `info` makes a value copied to another space, renamed
or retyped fail to open. History at rest is AES-256-GCM under a per-space data key, itself wrapped
by the ring's master key; the associated data binds namespace and version.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from spacesecrets.core.conditions import parse_rfc3339, rfc3339

WIRE_PREFIX = "hpke1"
INFO_PREFIX = "spacesecrets.io/v1alpha1"
SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_ENC_LEN = 32
_TAG_LEN = 16
_NONCE_LEN = 12


class UnsealError(ValueError):
    """A sealed value cannot be opened. `reason` is a constant; the message never holds a value."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


MALFORMED = "MalformedSealedValue"
UNKNOWN_KID = "UnknownSealingKey"
CANNOT_OPEN = "CannotOpen"


def info_for(namespace: str, key: str, fmt: str) -> bytes:
    return f"{INFO_PREFIX}:{namespace}:{key}:{fmt}".encode()


def raw_public(public_key: X25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def kid_of(public_key: X25519PublicKey) -> str:
    return hashlib.sha256(raw_public(public_key)).hexdigest()[:16]


def public_key_pem(public_key: X25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_key_pem(pem: str | bytes) -> X25519PublicKey:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ValueError("not a PEM public key") from exc
    if not isinstance(key, X25519PublicKey):
        raise ValueError("the public key is not an X25519 key")
    return key


def seal(public_key: X25519PublicKey, namespace: str, key: str, fmt: str, plaintext: bytes) -> str:
    """Seal one value for one space, KEY and format."""
    blob = SUITE.encrypt(plaintext, public_key, info=info_for(namespace, key, fmt))
    return f"{WIRE_PREFIX}:{kid_of(public_key)}:{base64.b64encode(blob).decode()}"


def parse_sealed(sealed: str) -> tuple[str, bytes]:
    """Split the wire form into (kid, enc||ciphertext); raises UnsealError(MALFORMED)."""
    parts = sealed.split(":")
    if len(parts) != 3 or parts[0] != WIRE_PREFIX or len(parts[1]) != 16:
        raise UnsealError(MALFORMED, "is not of the form hpke1:<kid>:<base64>")
    try:
        blob = base64.b64decode(parts[2], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UnsealError(MALFORMED, "has invalid base64") from exc
    if len(blob) < _ENC_LEN + _TAG_LEN:
        raise UnsealError(MALFORMED, "is truncated")
    return parts[1], blob


# ---------------------------------------------------------------------------------------------
# The key ring
# ---------------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# Key material is left out of every repr (`field(repr=False)`): a ring in a log line, a
# traceback's locals or a debugger shows kids, ids and dates only.


@dataclass(frozen=True)
class SealingKey:
    kid: str
    created: dt.datetime
    private: X25519PrivateKey = field(repr=False)

    @property
    def public(self) -> X25519PublicKey:
        return self.private.public_key()


@dataclass(frozen=True)
class MasterKey:
    id: str
    created: dt.datetime
    secret: bytes = field(repr=False)


def _new_sealing_key(now: dt.datetime) -> SealingKey:
    private = X25519PrivateKey.generate()
    return SealingKey(kid_of(private.public_key()), now, private)


def _new_master_key(now: dt.datetime) -> MasterKey:
    secret = os.urandom(32)
    return MasterKey(hashlib.sha256(secret).hexdigest()[:16], now, secret)


@dataclass(frozen=True)
class KeyRing:
    """Sealing keys and master keys, oldest first.

    The newest of each is current; none is ever dropped, so old values and history still open.
    """

    sealing: tuple[SealingKey, ...]
    masters: tuple[MasterKey, ...]
    _by_kid: dict[str, SealingKey] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_kid.update({k.kid: k for k in self.sealing})

    @classmethod
    def create(cls, now: dt.datetime) -> KeyRing:
        return cls((_new_sealing_key(now),), (_new_master_key(now),))

    @property
    def current(self) -> SealingKey:
        return self.sealing[-1]

    @property
    def master(self) -> MasterKey:
        return self.masters[-1]

    def kids(self) -> list[str]:
        return [k.kid for k in self.sealing]

    def get(self, kid: str) -> SealingKey | None:
        return self._by_kid.get(kid)

    def age(self, now: dt.datetime) -> float:
        return (now - self.current.created).total_seconds()

    def needs_rotation(self, now: dt.datetime, period: float) -> bool:
        return self.age(now) >= period

    def rotated(self, now: dt.datetime) -> KeyRing:
        """A ring with a new current sealing key and master key; the old ones stay to open data."""
        return KeyRing(
            (*self.sealing, _new_sealing_key(now)), (*self.masters, _new_master_key(now))
        )

    def public_pems(self) -> dict[str, str]:
        return {k.kid: public_key_pem(k.public) for k in self.sealing}

    def to_json(self) -> str:
        sealing = [
            {
                "kid": k.kid,
                "created": rfc3339(k.created),
                "private": _b64(
                    k.private.private_bytes(
                        serialization.Encoding.Raw,
                        serialization.PrivateFormat.Raw,
                        serialization.NoEncryption(),
                    )
                ),
            }
            for k in self.sealing
        ]
        masters = [
            {"id": m.id, "created": rfc3339(m.created), "secret": _b64(m.secret)}
            for m in self.masters
        ]
        return json.dumps({"sealing": sealing, "masters": masters}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> KeyRing:
        doc: dict[str, Any] = json.loads(text)
        sealing = tuple(
            SealingKey(
                k["kid"],
                parse_rfc3339(k["created"]),
                X25519PrivateKey.from_private_bytes(base64.b64decode(k["private"])),
            )
            for k in doc["sealing"]
        )
        masters = tuple(
            MasterKey(m["id"], parse_rfc3339(m["created"]), base64.b64decode(m["secret"]))
            for m in doc["masters"]
        )
        if not sealing or not masters:
            raise ValueError("the key ring is empty")
        return cls(sealing, masters)

    # -- opening ------------------------------------------------------------------------------

    def unseal(self, namespace: str, key: str, fmt: str, sealed: str) -> bytes:
        kid, blob = parse_sealed(sealed)
        sealing_key = self.get(kid)
        if sealing_key is None:
            raise UnsealError(UNKNOWN_KID, f"is sealed to an unknown key {kid}")
        try:
            return SUITE.decrypt(blob, sealing_key.private, info=info_for(namespace, key, fmt))
        except (InvalidTag, ValueError) as exc:
            raise UnsealError(
                CANNOT_OPEN,
                "cannot be opened: it was sealed for another namespace, KEY or format, "
                "or it was altered",
            ) from exc

    # -- envelope encryption of the history -----------------------------------------------

    def wrap(self, namespace: str, data_key: bytes) -> str:
        """Wrap a per-space data key under the current master key."""
        nonce = os.urandom(_NONCE_LEN)
        ct = AESGCM(self.master.secret).encrypt(nonce, data_key, _wrap_aad(namespace))
        return f"{self.master.id}:{_b64(nonce + ct)}"

    def unwrap(self, namespace: str, wrapped: str) -> bytes:
        master_id, _, blob_b64 = wrapped.partition(":")
        master = next((m for m in self.masters if m.id == master_id), None)
        if master is None:
            raise ValueError(f"the data key is wrapped by an unknown master key {master_id}")
        blob = base64.b64decode(blob_b64)
        return AESGCM(master.secret).decrypt(
            blob[:_NONCE_LEN], blob[_NONCE_LEN:], _wrap_aad(namespace)
        )

    def wrapped_by_current(self, wrapped: str) -> bool:
        return wrapped.partition(":")[0] == self.master.id


def _wrap_aad(namespace: str) -> bytes:
    return f"spacesecrets.io/datakey:{namespace}".encode()


def new_data_key() -> bytes:
    return os.urandom(32)


def _version_aad(namespace: str, version: int) -> bytes:
    return f"spacesecrets.io/history:{namespace}:{version}".encode()


def encrypt_version(data_key: bytes, namespace: str, version: int, plaintext: bytes) -> str:
    nonce = os.urandom(_NONCE_LEN)
    ct = AESGCM(data_key).encrypt(nonce, plaintext, _version_aad(namespace, version))
    return _b64(nonce + ct)


def decrypt_version(data_key: bytes, namespace: str, version: int, blob_b64: str) -> bytes:
    blob = base64.b64decode(blob_b64)
    return AESGCM(data_key).decrypt(
        blob[:_NONCE_LEN], blob[_NONCE_LEN:], _version_aad(namespace, version)
    )


def digest_key(data_key: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"spacesecrets.io/digest"
    ).derive(data_key)


def digest(key: bytes, fmt: str, value: bytes) -> str:
    """A keyed digest of one plaintext value and its format (never the value itself)."""
    return hmac.new(key, fmt.encode() + b"\x00" + value, hashlib.sha256).hexdigest()
