"""Passwords: at most N Argon2 hashes run at once, however many logins arrive together."""

import asyncio
import threading
import time
from pathlib import Path

import pytest
from accounts.bootstrap import Accounts
from accounts.identity.passwords import (
    PROCESS_RESERVE_BYTES,
    UNLIMITED_HASHES_AT_ONCE,
    Passwords,
    hashes_within,
    memory_limit_bytes,
)

MIB = 1024 * 1024


class HeldHasher:
    """Stands in for pwdlib's PasswordHash: each call holds its thread until released, and the
    most calls inside at the same time are counted."""

    hashers = ()

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside = 0
        self.most = 0
        self.release = threading.Event()

    def _enter(self) -> None:
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        self.release.wait(timeout=10)
        with self.lock:
            self.inside -= 1

    def hash(self, password: str) -> str:
        self._enter()
        return "$argon2id$held"

    def verify(self, password: str, stored: str) -> bool:
        self._enter()
        return False


async def test_at_most_n_hashes_run_at_once() -> None:
    passwords = Passwords(time_cost=1, memory_kib=8192, at_once=2)
    held = HeldHasher()
    passwords._hash = held  # type: ignore[assignment]  # the counting stand-in, not pwdlib

    burst = [
        asyncio.create_task(
            passwords.hash(f"password {n}") if n % 2 else passwords.verify("guess", None)
        )
        for n in range(8)
    ]
    deadline = time.monotonic() + 5
    while held.inside < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    # Room for a third to get in, were it let through: the thread pool has more workers.
    await asyncio.sleep(0.2)
    inside_while_held = held.inside
    held.release.set()
    results = await asyncio.gather(*burst)

    assert inside_while_held == 2
    assert held.most == 2
    assert len(results) == 8  # the others waited their turn, none was refused


def test_a_memory_limit_allows_what_fits_beside_the_process() -> None:
    assert hashes_within(512 * MIB, 65536) == 4
    assert hashes_within(1024 * MIB, 65536) == 12
    assert hashes_within(PROCESS_RESERVE_BYTES + 10 * MIB, 65536) == 1  # never none
    assert hashes_within(None, 65536) == UNLIMITED_HASHES_AT_ONCE


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({"memory.max": "536870912\n"}, 512 * MIB),
        ({"memory.max": "max\n"}, None),
        ({"memory/memory.limit_in_bytes": "805306368\n"}, 768 * MIB),
        ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),
        ({}, None),
    ],
)
def test_the_memory_limit_is_read_from_the_cgroup(
    tmp_path: Path, files: dict[str, str], limit: int | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)

    assert memory_limit_bytes(tmp_path) == limit


def test_no_hash_at_once_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Passwords(time_cost=1, memory_kib=8192, at_once=0)


@pytest.mark.parametrize("accounts_settings", [{"password_hashes_at_once": 3}], indirect=True)
async def test_the_setting_sizes_the_bound_the_service_is_wired_with(accounts: Accounts) -> None:
    assert accounts.identity.passwords.at_once == 3


async def test_unset_the_bound_comes_from_the_memory_limit(accounts: Accounts) -> None:
    memory_kib = accounts.settings.password_memory_kib
    assert accounts.identity.passwords.at_once == hashes_within(memory_limit_bytes(), memory_kib)
