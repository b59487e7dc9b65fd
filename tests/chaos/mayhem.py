"""The crashes of a chaos run: which process goes down when, and bringing it back.

A service is SIGKILLed (a crash at whatever line it is on) or, every third action, stopped with
SIGTERM, and the time until its process is gone is measured against the stop bound. The broker
and Redis are each SIGKILLed once and started again as they were (same port, same data
directory), where they are local processes. Every action is started again after a short pause,
and the run waits until the service (or, after the broker or Redis, every service) is ready.
"""

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import httpx

from tests.support.infra import SERVICES, Platform, Process, Server

Kind = Literal["kill", "stop", "kill-broker", "kill-redis"]
#: What a SIGTERMed service's log says about its stop: its runtime's steps and the watchdog.
STOP_LOG_MARKS = ("stopped in", "did not finish within", "abandoned at stop", "took longer than")
READY_TIMEOUT_S = 120.0
RESTART_TRIES = 3


@dataclass(frozen=True)
class Action:
    """One planned crash: when (seconds into the load), what, and of which process."""

    at_s: float
    kind: Kind
    target: str


def plan_actions(
    seconds: float,
    rng: random.Random,
    *,
    every_s: tuple[float, float] = (20.0, 30.0),
    broker: bool = True,
    redis: bool = True,
) -> list[Action]:
    """The actions of a run: a service every `every_s` seconds, the broker and Redis once.

    Every third service action (the second, fifth, ...) is a SIGTERM stop, so even a short run
    has one. The broker goes down about 40 % into the run and Redis about 70 % in, each half way
    between the service actions around that moment, so that one outage ends before the next.
    """
    times: list[float] = []
    moment = rng.uniform(*every_s)
    while moment < seconds:
        times.append(moment)
        moment += rng.uniform(*every_s)
    actions = [
        Action(round(at, 1), "stop" if n % 3 == 1 else "kill", rng.choice(SERVICES))
        for n, at in enumerate(times)
    ]
    extra: list[tuple[float, Kind, str]] = []
    if broker:
        extra.append((0.4 * seconds, "kill-broker", "kafka"))
    if redis:
        extra.append((0.7 * seconds, "kill-redis", "redis"))
    actions.extend(_between(times, seconds, extra))
    return sorted(actions, key=lambda action: action.at_s)


def _between(
    times: Sequence[float], seconds: float, wanted: Sequence[tuple[float, Kind, str]]
) -> list[Action]:
    """Place each wanted action in the gap between service actions its moment falls into."""
    edges = [0.0, *times, seconds]
    gaps: dict[int, list[tuple[Kind, str]]] = {}
    for point, kind, target in wanted:
        gap = next(i for i in range(len(edges) - 1) if point < edges[i + 1] or i == len(edges) - 2)
        gaps.setdefault(gap, []).append((kind, target))
    placed = []
    for gap, members in gaps.items():
        low, high = edges[gap], edges[gap + 1]
        for n, (kind, target) in enumerate(members, start=1):
            placed.append(
                Action(round(low + (high - low) * n / (len(members) + 1), 1), kind, target)
            )
    return placed


@dataclass
class ActionRecord:
    """What happened when an action was done."""

    kind: Kind
    target: str
    planned_s: float
    #: Seconds into the load when the action began.
    began_s: float = 0.0
    #: SIGTERM only: seconds from the signal until the process was gone, its exit code, and
    #: whether it had to be SIGKILLed at the bound.
    stop_s: float | None = None
    exit_code: int | None = None
    overstayed: bool = False
    #: SIGTERM only: what the service's log said about its stop.
    stop_log: list[str] = field(default_factory=list)
    #: Seconds the process was left down before it was started again.
    pause_s: float = 0.0
    #: Seconds from the kill (or signal) until the process was ready again.
    down_s: float | None = None
    #: Broker and Redis: seconds from the kill until every service was ready again.
    services_ready_s: float | None = None
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly, rounded."""
        values = asdict(self)
        for name in ("began_s", "stop_s", "pause_s", "down_s", "services_ready_s"):
            if values[name] is not None:
                values[name] = round(values[name], 2)
        return values

    def describe(self) -> str:
        """One line for the printed summary."""
        text = f"{self.began_s:6.1f} s  {self.kind:<11} {self.target:<12}"
        if self.stop_s is not None:
            text += f" exited in {self.stop_s:.1f} s (code {self.exit_code})"
            if self.overstayed:
                text += " OVERSTAYED, SIGKILLed"
            said = [line for line in self.stop_log if "stopped in" in line]
            if said:
                text += f" [{said[-1].rsplit(': ', 1)[-1]}]"
            if any("took longer than" in line for line in self.stop_log):
                text += " [its watchdog ended it]"
        if self.down_s is not None:
            text += f"; ready again after {self.down_s:.1f} s"
        if self.services_ready_s is not None:
            text += f"; all services ready after {self.services_ready_s:.1f} s"
        if self.errors:
            text += "; " + "; ".join(self.errors)
        return text


class Mayhem:
    """Does the planned actions on a running platform, one at a time, in a worker thread."""

    def __init__(
        self,
        platform: Platform,
        broker: Server,
        redis: Server,
        *,
        stop_bound_s: float,
        rng: random.Random,
        say: Callable[[str], None] = print,
    ) -> None:
        self.platform = platform
        self.broker = broker
        self.redis = redis
        self.stop_bound_s = stop_bound_s
        self.rng = rng
        self.say = say
        self.records: list[ActionRecord] = []
        #: Chaos steps the platform did not recover from (the verdict's `recovery` rule).
        self.troubles: list[str] = []

    async def run(self, actions: Sequence[Action], began: float, stopping: asyncio.Event) -> None:
        """Do each action at its moment (seconds after `began`) until `stopping` is set."""
        for action in actions:
            wait = began + action.at_s - time.monotonic()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), wait)
            if stopping.is_set():
                return
            record = await asyncio.to_thread(self.perform, action, began)
            self.records.append(record)
            self.say(f"chaos: {record.describe()}")

    def perform(self, action: Action, began: float) -> ActionRecord:
        """Do one action and bring the process back (blocking)."""
        self.revive_the_dead(began)
        record = ActionRecord(action.kind, action.target, action.at_s)
        record.began_s = time.monotonic() - began
        if action.kind == "kill":
            self._kill_service(record)
        elif action.kind == "stop":
            self._stop_service(record)
        elif action.kind == "kill-broker":
            assert self.broker.process is not None
            self._kill_server(record, self.broker.process, pause=(3.0, 6.0), timeout=180)
        else:
            assert self.redis.process is not None
            self._kill_server(record, self.redis.process, pause=(2.0, 4.0), timeout=60)
        self.troubles.extend(f"{action.kind} {action.target}: {e}" for e in record.errors)
        return record

    def revive_the_dead(self, began: float) -> None:
        """Start again any service that exited without being told to: that is a finding."""
        for name in SERVICES:
            popen = self.platform.processes[name].popen
            if popen is not None and popen.poll() is not None:
                at = time.monotonic() - began
                self.troubles.append(
                    f"{name} exited by itself with code {popen.returncode} (noticed at {at:.0f} s)"
                )
                self.say(f"chaos: {name} had exited by itself (code {popen.returncode})")
                self._start_service(name, [])

    def all_ready(self, timeout: float = READY_TIMEOUT_S) -> float | None:
        """Wait until every service answers ready; the seconds it took, or None."""
        started = time.monotonic()
        deadline = started + timeout
        pending = set(SERVICES)
        while pending and time.monotonic() < deadline:
            pending = {name for name in pending if not self._ready(name)}
            if pending:
                time.sleep(0.5)
        return None if pending else time.monotonic() - started

    def _ready(self, name: str) -> bool:
        try:
            answer = httpx.get(f"{self.platform.url(name)}/health/ready", timeout=3)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    def _kill_service(self, record: ActionRecord) -> None:
        name = record.target
        began = time.monotonic()
        self.platform.processes[name].kill()
        record.pause_s = self._pause(1.0, 3.0)
        if self._start_service(name, record.errors):
            record.down_s = time.monotonic() - began

    def _stop_service(self, record: ActionRecord) -> None:
        name = record.target
        process = self.platform.processes[name]
        popen = process.popen
        assert popen is not None
        log_offset = process.log_path.stat().st_size if process.log_path.exists() else 0
        began = time.monotonic()
        try:
            os.killpg(popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            record.errors.append("the process was already gone")
        try:
            popen.wait(self.stop_bound_s)
        except subprocess.TimeoutExpired:
            record.overstayed = True
            process.kill()
        record.stop_s = time.monotonic() - began
        record.exit_code = popen.returncode
        record.stop_log = _log_lines_since(process, log_offset, STOP_LOG_MARKS)
        record.pause_s = self._pause(1.0, 3.0)
        if self._start_service(name, record.errors):
            record.down_s = time.monotonic() - began

    def _kill_server(
        self, record: ActionRecord, process: Process, *, pause: tuple[float, float], timeout: float
    ) -> None:
        began = time.monotonic()
        process.kill()
        record.pause_s = self._pause(*pause)
        for attempt in range(1, RESTART_TRIES + 1):
            try:
                process.start(timeout=timeout)
                break
            except (RuntimeError, TimeoutError) as error:
                record.errors.append(f"start {attempt} failed: {str(error)[:300]}")
                process.kill()
        else:
            return
        record.down_s = time.monotonic() - began
        ready = self.all_ready()
        if ready is None:
            record.errors.append(f"not every service was ready {READY_TIMEOUT_S:g} s after")
        else:
            record.services_ready_s = time.monotonic() - began

    def _start_service(self, name: str, errors: list[str]) -> bool:
        """Start a service as the platform configures it; a few tries. True once it is ready."""
        for attempt in range(1, RESTART_TRIES + 1):
            process = self.platform.service_process(name)
            # Registered before it is ready, so a process that never gets there is still
            # stopped with the platform.
            self.platform.processes[name] = process
            try:
                process.launch().wait_ready(READY_TIMEOUT_S)
                return True
            except (RuntimeError, TimeoutError) as error:
                errors.append(f"{name} start {attempt} failed: {str(error)[:300]}")
                process.kill()
        return False

    def _pause(self, low: float, high: float) -> float:
        # The outage itself: clients see the process gone for this long.
        seconds = self.rng.uniform(low, high)
        time.sleep(seconds)
        return seconds


def _log_lines_since(process: Process, offset: int, marks: Sequence[str]) -> list[str]:
    try:
        with process.log_path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return []
    return [line.strip()[:300] for line in text.splitlines() if any(m in line for m in marks)]
