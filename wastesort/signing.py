"""ed25519 signatures over manifest entries.

The publisher signs `ModelEntry.signing_payload()` (every field but the signature itself, in
canonical JSON), so a device holding the fleet's public key can refuse a model whose entry,
sha256 included, was not published by whoever holds the private key.
`cryptography` is imported only here, and only when a key is in play.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING

from wastesort.errors import SignatureError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from wastesort.manifest import ModelEntry


def _read(key: bytes | str | Path) -> bytes:
    if isinstance(key, bytes):
        return key
    text = str(key)
    if text.lstrip().startswith("-----BEGIN"):
        return text.encode()
    return Path(key).read_bytes()


def generate_keypair() -> tuple[bytes, bytes]:
    """A new (private PEM, public PEM) pair for `wastesort registry keygen`."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: PLC0415

    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def load_private_key(private_key: bytes | str | Path) -> Ed25519PrivateKey:
    """The ed25519 private key in a PEM (bytes, text or a file).

    Raises:
        SignatureError: it is not an unencrypted ed25519 private key (a public key, say).
    """
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: PLC0415

    try:
        key = serialization.load_pem_private_key(_read(private_key), password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"not a PEM private key without a password: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError("the signing key is not an ed25519 private key")
    return key


def sign(entry: ModelEntry, private_key: bytes | str | Path) -> ModelEntry:
    """Return a copy of `entry` carrying a signature made with the PEM private key."""
    signature = load_private_key(private_key).sign(entry.signing_payload())
    return entry.model_copy(update={"signature": base64.b64encode(signature).decode()})


def verify(entry: ModelEntry, public_key: bytes | str | Path) -> None:
    """Raise SignatureError unless `entry` is signed by the PEM public key."""
    from cryptography.exceptions import InvalidSignature  # noqa: PLC0415
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey  # noqa: PLC0415

    if not entry.signature:
        raise SignatureError(f"model {entry.version} is not signed, and a signature is required")
    key = serialization.load_pem_public_key(_read(public_key))
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError("the verification key is not an ed25519 public key")
    try:
        key.verify(base64.b64decode(entry.signature, validate=True), entry.signing_payload())
    except (InvalidSignature, ValueError):
        raise SignatureError(
            f"model {entry.version}: the signature does not match the manifest entry"
        ) from None
