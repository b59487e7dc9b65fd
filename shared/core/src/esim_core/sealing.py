"""Secrets sealed for one reader: AES-256-GCM under a key that only its producer and reader hold.

A password reset code travels from accounts to the notifier inside an event on a topic that other
services may read; sealed, the topic shows only ciphertext, bound to the event it belongs to.
"""

import base64
import hashlib
import logging
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings

from esim_core.settings import KeySetting

_VERSION = "v1"

DEV_RESET_CODE_KEY = "local-development-only-reset-code-key"
"""The reset-code key of a local run, where `RESET_CODE_KEY` is not set."""

logger = logging.getLogger(__name__)


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


class ResetCodeKeySettings(BaseSettings):
    """The `RESET_CODE_KEY` setting of the services that seal (accounts) or open (the notifier)
    password reset codes: one unprefixed variable, so both read the same key.
    """

    reset_code_key: KeySetting = Field(
        SecretStr(DEV_RESET_CODE_KEY),
        validation_alias=AliasChoices("RESET_CODE_KEY"),
        description="key (32+ characters) under which accounts seals reset codes for the "
        "notifier; accounts and the notifier must have the same RESET_CODE_KEY",
    )

    def reset_code_sealer(self) -> Sealer:
        """The sealer under `RESET_CODE_KEY`; says so in the log when that is the local key."""
        key = self.reset_code_key.get_secret_value()
        if key == DEV_RESET_CODE_KEY:
            logger.warning("RESET_CODE_KEY is not set: using the local development key")
        return Sealer(key)
