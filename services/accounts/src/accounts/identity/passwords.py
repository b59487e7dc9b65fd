"""Passwords: Argon2id through pwdlib, older scrypt hashes still verified, off the event loop,
a bounded number at once."""

import asyncio
import base64
import hashlib
import hmac
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

#: What the accounts process needs besides its hashes (Python, the app, its pools and caches:
#: some 130 MiB once started, the rest for load), kept out of the hashes' share of the limit.
PROCESS_RESERVE_BYTES = 256 * 1024 * 1024
#: Hashes at once where the process has no memory limit (a local run).
UNLIMITED_HASHES_AT_ONCE = 4
#: cgroup v2's and v1's files holding the process's memory limit.
_LIMIT_FILES = ("memory.max", "memory/memory.limit_in_bytes")
#: cgroup v1 says "no limit" with a number near 2**63.
_NO_LIMIT = 1 << 60

T = TypeVar("T")


def memory_limit_bytes(cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The memory limit of this process's cgroup (a container's limit), or None without one."""
    for name in _LIMIT_FILES:
        try:
            text = (cgroup / name).read_text().strip()
        except OSError:
            continue
        if text == "max" or not text.isdigit() or int(text) >= _NO_LIMIT:
            return None
        return int(text)
    return None


def hashes_within(limit_bytes: int | None, memory_kib: int) -> int:
    """How many Argon2 hashes of `memory_kib` each fit a memory limit beside the process.

    Past the limit the kernel kills the process (OOMKilled), every request in flight with it.
    At least one, so logins still work where the limit is tight.
    """
    if limit_bytes is None:
        return UNLIMITED_HASHES_AT_ONCE
    return max(1, (limit_bytes - PROCESS_RESERVE_BYTES) // (memory_kib * 1024))


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
    would hold up every other request of the process meanwhile. Each hash takes `memory_kib`
    (64 MiB by default), so at most `at_once` run together and the others wait their turn: a
    burst of logins is slower, never more memory than the pod's limit.
    """

    def __init__(self, *, time_cost: int = 3, memory_kib: int = 65536, at_once: int = 4) -> None:
        if at_once < 1:
            raise ValueError("at least one hash must be allowed at once")
        self._hash = PasswordHash(
            [Argon2Hasher(time_cost=time_cost, memory_cost=memory_kib), LegacyScryptHasher()]
        )
        self.at_once = at_once
        self._slots = asyncio.Semaphore(at_once)
        # A hash that matches nothing, verified when the account does not exist, so a login's
        # answer time does not tell which e-mail addresses are registered.
        self._decoy = self._hash.hash("decoy password that matches nothing")

    async def _bounded(self, work: Callable[..., T], *args: str) -> T:
        async with self._slots:
            return await asyncio.to_thread(work, *args)

    async def hash(self, password: str) -> str:
        """A new Argon2id hash of the password."""
        return await self._bounded(self._hash.hash, password)

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
            await self._bounded(self._hash.verify, password, self._decoy)
            return False, None
        if not any(hasher.identify(stored) for hasher in self._hash.hashers):
            return False, None
        return await self._bounded(self._hash.verify_and_update, password, stored)
