"""Ed25519 signing key: loaded from a PEM file, created on first start in dev."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger(__name__)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SigningKey:
    """The registry's private key with its key id and public JWK."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self.private = private
        self.public: Ed25519PublicKey = private.public_key()
        raw = self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.kid = hashlib.sha256(raw).hexdigest()[:16]
        self._raw_public = raw

    def jwk(self) -> dict[str, Any]:
        """Public key as an OKP JWK."""
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": _b64(self._raw_public),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        }

    @classmethod
    def load_or_create(cls, path: Path, *, create: bool) -> SigningKey:
        """Read the PEM at ``path``; create it (mode 0600) when allowed and missing."""
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"{path} is not an Ed25519 private key")
            return cls(key)
        if not create:
            raise FileNotFoundError(f"JWT signing key {path} is missing")
        key = Ed25519PrivateKey.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        log.info("created JWT signing key %s", path)
        return cls(key)
