"""Secrets sealed for one reader: AES-256-GCM under a key that only its producer and reader hold.

A password reset code travels from accounts to the notifier inside an event on a topic that other
services may read; sealed, the topic shows only ciphertext, bound to the event it belongs to.
"""

import base64
import hashlib
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = "v1"


class SealError(Exception):
    """A sealed value that cannot be opened: another key, another context, or tampered with."""


class Sealer:
    """Seals and opens short secrets; the key is derived from a passphrase of 32+ characters."""

    def __init__(self, passphrase: str) -> None:
        if len(passphrase) < 32:
            raise ValueError("a sealing key must be at least 32 characters long")
        self._aead = AESGCM(hashlib.sha256(f"esim-seal:{passphrase}".encode()).digest())

    def seal(self, secret: str, context: str) -> str:
        """The secret encrypted and authenticated, bound to `context` (e.g. the user id)."""
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, secret.encode(), context.encode())
        return f"{_VERSION}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, sealed: str, context: str) -> str:
        """The secret inside a sealed value.

        Raises:
            SealError: the value was sealed with another key or context, or was altered.
        """
        version, _, body = sealed.partition(".")
        try:
            if version != _VERSION:
                raise ValueError(version)
            raw = base64.urlsafe_b64decode(body.encode())
            return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except (InvalidTag, ValueError) as error:
            raise SealError("the sealed value cannot be opened with this key") from error
