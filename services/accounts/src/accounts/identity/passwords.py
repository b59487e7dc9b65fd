"""Passwords: Argon2id through pwdlib, older scrypt hashes still verified, off the event loop."""

import asyncio
import base64
import hashlib
import hmac

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher


class LegacyScryptHasher:
    """Verifies the `scrypt$N$r$p$salt$digest` hashes written before Argon2; never writes one."""

    @classmethod
    def identify(cls, hash: str | bytes) -> bool:
        """Whether the hash is one of ours from before Argon2."""
        text = hash.decode() if isinstance(hash, bytes) else hash
        return text.startswith("scrypt$")

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        """Not offered: new hashes are Argon2."""
        raise NotImplementedError("scrypt hashes are only verified, never written")

    def verify(self, password: str | bytes, hash: str | bytes) -> bool:
        """Tell whether a password matches a stored scrypt hash, in constant time."""
        text = hash.decode() if isinstance(hash, bytes) else hash
        secret = password.encode() if isinstance(password, str) else password
        try:
            _, n, r, p, salt, digest = text.split("$")
            candidate = hashlib.scrypt(
                secret, salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32
            )
            return hmac.compare_digest(candidate, base64.b64decode(digest))
        except ValueError:
            return False

    def check_needs_rehash(self, hash: str | bytes) -> bool:
        """Always: a scrypt hash is replaced by Argon2 at the next successful login."""
        return True


class Passwords:
    """Hashes and verifies passwords in a worker thread, so a login never stalls other requests.

    Argon2 costs tens of milliseconds of CPU and memory by design; run on the event loop it
    would hold up every other request of the process meanwhile.
    """

    def __init__(self, *, time_cost: int = 3, memory_kib: int = 65536) -> None:
        self._hash = PasswordHash(
            [Argon2Hasher(time_cost=time_cost, memory_cost=memory_kib), LegacyScryptHasher()]
        )
        # A hash that matches nothing, verified when the account does not exist, so a login's
        # answer time does not tell which e-mail addresses are registered.
        self._decoy = self._hash.hash("decoy password that matches nothing")

    async def hash(self, password: str) -> str:
        """A new Argon2id hash of the password."""
        return await asyncio.to_thread(self._hash.hash, password)

    async def verify(self, password: str, stored: str | None) -> tuple[bool, str | None]:
        """Whether the password matches, and the hash to store instead where it should change.

        Args:
            password: what the user typed.
            stored: the stored hash, or None when there is no such account (a decoy is
                verified instead, to spend the same time).

        Returns:
            (matches, new hash or None): a new hash where the stored one is scrypt or its
            Argon2 parameters are outdated.
        """
        if stored is None:
            await asyncio.to_thread(self._hash.verify, password, self._decoy)
            return False, None
        if not any(hasher.identify(stored) for hasher in self._hash.hashers):
            return False, None
        return await asyncio.to_thread(self._hash.verify_and_update, password, stored)
