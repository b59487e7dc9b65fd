"""The crashes of a chaos run: which process goes down when, and bringing it back.

A service is SIGKILLed (a crash at whatever line it is on) or, every third action, stopped with
SIGTERM, and the time until its process is gone is measured against the stop bound. The broker
and Redis (and PostgreSQL, where the services use it) are each SIGKILLed once and started again
as they were (same port, same data directory), where they are local processes. Each process is
started again after a short pause, and the next action waits until it (or, after a server,
every service) is ready.
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

Kind = Literal["kill", "stop", "kill-broker", "kill-redis", "kill-postgres"]
#: What a SIGTERMed service's log says about its stop: its runtime's steps and the watchdog.
STOP_LOG_MARKS = ("stopped in", "did not finish within", "abandoned at stop", "took longer than")
READY_TIMEOUT_S = 120.0
RESTART_TRIES = 3


@dataclass(frozen=True)
class Action:
    """One crash: what, and of which process."""

    kind: Kind
    target: str


class Plan:
    """Decides the next crash, given how far into the load the run is.

    A service action comes every `every_s` seconds (start to start, or right after the one
    before when that took longer), and every third of them (the second, fifth, ...) is a
    SIGTERM stop. Services (with replicas, service processes: `targets`) are dealt from a
    shuffled deck, so each of four actions in a row hits another one. The broker goes down once
    in the first slot after 40 % of the run, PostgreSQL (with `postgres`) after 55 %, Redis
    after 70 %. Once the run's
    seconds are over, only what it must still have had comes (the broker, Redis, a kill, a
    stop), at half the shortest gap, so that even a short
    run has every kind without lasting much longer.
    """

    def __init__(
        self,
        seconds: float,
        rng: random.Random,
        *,
        every_s: tuple[float, float] = (20.0, 30.0),
        broker: bool = True,
        redis: bool = True,
        postgres: bool = False,
        targets: Sequence[str] = SERVICES,
    ) -> None:
        self.seconds = seconds
        self.targets = tuple(targets)
        self.rng = rng
        self.every_s = every_s
        self._one_offs: list[tuple[float, Action]] = []
        if broker:
            self._one_offs.append((0.4 * seconds, Action("kill-broker", "kafka")))
        if postgres:
            self._one_offs.append((0.55 * seconds, Action("kill-postgres", "postgres")))
        if redis:
            self._one_offs.append((0.7 * seconds, Action("kill-redis", "redis")))
        self._services_done = 0
        self._kinds_done: set[Kind] = set()
        self._deck: list[str] = []

    def gap(self, elapsed: float = 0.0) -> float:
        """Seconds from the start of an action, `elapsed` seconds into the load, to the next."""
        if elapsed >= self.seconds:
            return self.every_s[0] / 2
        return self.rng.uniform(*self.every_s)

    def next(self, elapsed: float) -> Action | None:
        """The action to do now, `elapsed` seconds into the load; None when the plan is done."""
        due = [entry for entry in self._one_offs if entry[0] <= elapsed]
        if due:
            self._one_offs.remove(due[0])
            return self._done(due[0][1])
        if elapsed < self.seconds:
            return self._done(self._service_action())
        if self._one_offs:
            return self._done(self._one_offs.pop(0)[1])
        for kind in ("kill", "stop"):
            if kind not in self._kinds_done:
                return self._done(Action(kind, self._deal()))
        return None

    def _service_action(self) -> Action:
        kind: Kind = "stop" if self._services_done % 3 == 1 else "kill"
        self._services_done += 1
        return Action(kind, self._deal())

    def _deal(self) -> str:
        if not self._deck:
            self._deck = list(self.targets)
            self.rng.shuffle(self._deck)
        return self._deck.pop()

    def _done(self, action: Action) -> Action:
        self._kinds_done.add(action.kind)
        return action

    def owed(self) -> list[str]:
        """What the plan must still do: the broker, PostgreSQL, Redis, a first kill or stop."""
        owed = [f"{action.kind} {action.target}" for _, action in self._one_offs]
        owed.extend(kind for kind in ("kill", "stop") if kind not in self._kinds_done)
        return owed

    def describe(self) -> str:
        """The plan in one line, for the start of a run."""
        text = (
            f"a service every {self.every_s[0]:g}-{self.every_s[1]:g} s (every third a SIGTERM "
            "stop)"
        )
        for at, action in self._one_offs:
            text += f", {action.target} once from {at:.0f} s"
        return text


def simulate(plan: Plan, took: Callable[[Action], float], *, longest: float) -> list[float]:
    """The moments a plan's actions would start at if each took `took(action)` seconds.

    What `Mayhem.run` does with time, without the processes: for tests of the plan.
    """
    moments: list[float] = []
    now = plan.gap()
    while now < longest:
        action = plan.next(now)
        if action is None:
            break
        moments.append(now)
        now = max(now + plan.gap(now), now + took(action))
    return moments


@dataclass
class ActionRecord:
    """What happened when an action was done."""

    kind: Kind
    target: str
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
        database: Server | None = None,
        stop_bound_s: float,
        rng: random.Random,
        say: Callable[[str], None] = print,
    ) -> None:
        self.platform = platform
        self.broker = broker
        self.redis = redis
        self.database = database
        self.stop_bound_s = stop_bound_s
        self.rng = rng
        self.say = say
        self.records: list[ActionRecord] = []
        #: Chaos steps the platform did not recover from (the verdict's `recovery` rule).
        self.troubles: list[str] = []

    async def run(self, plan: Plan, began: float, stopping: asyncio.Event) -> None:
        """Do the plan's actions (the load began at `began`) until it is done or `stopping`."""
        at = began + plan.gap()
        while True:
            wait = at - time.monotonic()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), wait)
            if stopping.is_set():
                return
            started = time.monotonic()
            action = plan.next(started - began)
            if action is None:
                return
            record = await asyncio.to_thread(self.perform, action, began)
            self.records.append(record)
            self.say(f"chaos: {record.describe()}")
            at = started + plan.gap(started - began)

    def perform(self, action: Action, began: float) -> ActionRecord:
        """Do one action and bring the process back (blocking)."""
        self.revive_the_dead(began)
        record = ActionRecord(action.kind, action.target)
        record.began_s = time.monotonic() - began
        if action.kind == "kill":
            self._kill_service(record)
        elif action.kind == "stop":
            self._stop_service(record)
        elif action.kind == "kill-broker":
            assert self.broker.process is not None
            self._kill_server(record, self.broker.process, pause=(3.0, 6.0), timeout=180)
        elif action.kind == "kill-postgres":
            assert self.database is not None and self.database.process is not None
            # Every backend with it (each is a session of its own): a crash of the server.
            self._kill_server(
                record, self.database.process, pause=(2.0, 4.0), timeout=60, whole=True
            )
        else:
            assert self.redis.process is not None
            self._kill_server(record, self.redis.process, pause=(2.0, 4.0), timeout=60)
        self.troubles.extend(f"{action.kind} {action.target}: {e}" for e in record.errors)
        return record

    def revive_the_dead(self, began: float) -> None:
        """Start again any service that exited without being told to: that is a finding."""
        for name in self.platform.service_processes:
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
        pending = set(self.platform.service_processes)
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
        self,
        record: ActionRecord,
        process: Process,
        *,
        pause: tuple[float, float],
        timeout: float,
        whole: bool = False,
    ) -> None:
        began = time.monotonic()
        process.kill(every_descendant=whole)
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
