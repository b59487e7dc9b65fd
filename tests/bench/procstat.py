"""CPU seconds and resident memory of process trees, read from /proc (Linux only, no psutil)."""

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcSample:
    """One process as /proc shows it now."""

    pid: int
    ppid: int
    cpu_s: float
    rss_bytes: int


def read_stat(pid: int) -> ProcSample | None:
    """The parent, CPU seconds (user + system) and RSS of a process; None if it is gone."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return parse_stat(pid, raw)


def parse_stat(pid: int, raw: str) -> ProcSample:
    """Parse `/proc/<pid>/stat` (the command name may hold spaces and parentheses)."""
    rest = raw[raw.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15, rss (pages) 24.
    ppid, utime, stime, rss_pages = int(rest[1]), int(rest[11]), int(rest[12]), int(rest[21])
    return ProcSample(pid, ppid, (utime + stime) / CLOCK_TICKS, rss_pages * PAGE_SIZE)


def all_processes() -> dict[int, ProcSample]:
    """Every process readable now, by pid."""
    found: dict[int, ProcSample] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (sample := read_stat(int(entry.name))) is not None:
            found[sample.pid] = sample
    return found


def tree(root: int, processes: Mapping[int, ProcSample]) -> list[ProcSample]:
    """The process and all its descendants."""
    children: dict[int, list[int]] = {}
    for sample in processes.values():
        children.setdefault(sample.ppid, []).append(sample.pid)
    result, todo, seen = [], [root], set()
    while todo:
        pid = todo.pop()
        if pid in processes and pid not in seen:
            seen.add(pid)
            result.append(processes[pid])
            todo.extend(children.get(pid, []))
    return result


def listening_pid(port: int) -> int | None:
    """The process holding a TCP socket that listens on a loopback/any port (root sees all)."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{inode}]")
    if not inodes:
        return None
    candidates = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            links = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue
        if inodes.intersection(links):
            candidates.append(int(entry.name))
    # A forked server shares the socket with its children: the topmost holder is the server.
    processes = {pid: s for pid in candidates if (s := read_stat(pid)) is not None}
    tops = [pid for pid, s in processes.items() if s.ppid not in processes]
    return min(tops) if tops else None


@dataclass
class TreeUsage:
    """What one process tree used since the window began."""

    first_cpu: dict[int, float] = field(default_factory=dict)
    last_cpu: dict[int, float] = field(default_factory=dict)
    peak_rss_bytes: int = 0

    @property
    def cpu_s(self) -> float:
        """CPU seconds the tree's processes used in the window (children born in it count)."""
        return sum(cpu - self.first_cpu.get(pid, 0.0) for pid, cpu in self.last_cpu.items())

    @property
    def peak_rss_mb(self) -> float:
        """The largest tree RSS sampled in the window, in MiB."""
        return self.peak_rss_bytes / 2**20

    def copy(self) -> "TreeUsage":
        """A snapshot."""
        return TreeUsage(dict(self.first_cpu), dict(self.last_cpu), self.peak_rss_bytes)


@dataclass
class Sampler:
    """Samples named process trees in a thread; `begin()` and `window()` bracket one phase.

    A name may stand for several trees (the three baseline relays); names in `alone` count
    their root processes only, not their children (the bench itself, which started the rest).
    """

    roots: dict[str, tuple[int, ...]]
    alone: frozenset[str] = frozenset()
    interval: float = 0.5
    _usage: dict[str, TreeUsage] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "Sampler":
        """Start sampling in a daemon thread."""
        self.begin()
        self._thread = threading.Thread(target=self._run, name="procstat", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def begin(self) -> None:
        """Start a new window: CPU and peak RSS count from now."""
        members = self._members()
        with self._lock:
            self._usage = {}
            for name, samples in members.items():
                cpu = {s.pid: s.cpu_s for s in samples}
                rss = sum(s.rss_bytes for s in samples)
                self._usage[name] = TreeUsage(dict(cpu), cpu, rss)

    def window(self) -> dict[str, TreeUsage]:
        """The usage of each tree since `begin`, sampled once more now."""
        self._sample()
        with self._lock:
            return {name: usage.copy() for name, usage in self._usage.items()}

    def add(self, name: str, *pids: int) -> None:
        """Watch one more named set of trees (from the next sample on)."""
        with self._lock:
            self.roots[name] = pids

    def _members(self) -> dict[str, list[ProcSample]]:
        processes = all_processes()
        with self._lock:
            roots = dict(self.roots)
        members: dict[str, list[ProcSample]] = {}
        for name, pids in roots.items():
            if name in self.alone:
                members[name] = [processes[pid] for pid in pids if pid in processes]
            else:
                members[name] = [member for pid in pids for member in tree(pid, processes)]
        return members

    def _sample(self) -> None:
        members = self._members()
        with self._lock:
            for name, samples in members.items():
                usage = self._usage.setdefault(name, TreeUsage())
                for sample in samples:
                    usage.last_cpu[sample.pid] = sample.cpu_s
                rss = sum(s.rss_bytes for s in samples)
                usage.peak_rss_bytes = max(usage.peak_rss_bytes, rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()


def find_roots(ports: Mapping[str, int]) -> dict[str, int]:
    """The process listening on each named port, where one does."""
    return {name: pid for name, port in ports.items() if (pid := listening_pid(port)) is not None}


def machine_busy_s() -> float:
    """CPU seconds all cores of the machine spent busy (not idle or waiting) since boot."""
    fields = (PROC / "stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(value) for value in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    # guest time is already part of user time
    busy = sum(ticks[:8]) - idle
    return busy / CLOCK_TICKS
