"""py-spy on the services during a phase, and the top functions by own time of its output.

`py-spy record --format raw` writes collapsed stacks, one `frame;frame;...;leaf count` line per
distinct stack (a frame is `function (file:line)`); the leaf is where the sample's time was
spent ("own" time), every frame of the stack shares it ("total" time). py-spy leaves out
threads it sees idle, but counts some blocked ones as active (aiosqlite's connection threads
waiting on their queue, the event loop waiting in uvloop's C code); those leaves are told
apart here, and the top functions are over the samples that did work.
"""

import importlib
import inspect
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tests.support.infra import ROOT

FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
SAMPLE_RATE = 100
#: Where the project's own code is, as a frame's short file begins.
PROJECT_PACKAGES = (
    "accounts/",
    "billing/",
    "provisioning/",
    "notifier/",
    "esim_core/",
    "esim_schemas/",
    "sandboxes/",
)


def py_spy() -> str:
    """The py-spy executable of this environment."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise RuntimeError("py-spy is not installed; `make sync` installs the dev group")
    return found


def record(pid: int, output: Path, seconds: float, log: Path) -> subprocess.Popen[bytes]:
    """Start sampling a process for `seconds`; raw output to `output`.

    py-spy pauses the process for each sample: only then does it ask the OS which threads run
    (in `--nonblocking` mode it guesses, and counts an event loop waiting in epoll as busy).
    """
    argv = [
        py_spy(),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        str(SAMPLE_RATE),
        "--format",
        "raw",
        "--output",
        str(output),
    ]
    with log.open("ab") as sink:
        return subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)


def short_file(path: str) -> str:
    """A frame's file without the virtualenv or repository prefix."""
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    root = f"{ROOT}/"
    return path.removeprefix(root)


def frame_name(frame: str) -> str:
    """`function (file)` of a py-spy frame, the line number dropped."""
    match = FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    return f"{match['function']} ({short_file(match['file'])})"


@dataclass(frozen=True)
class Hot:
    """A function's share of the samples."""

    name: str
    own: int
    total: int


def parse_collapsed(lines: Iterable[str]) -> list[tuple[list[str], int]]:
    """(raw frames root first, count) per line of py-spy's raw output."""
    stacks = []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        stacks.append(([f for f in stack.split(";") if f], int(count)))
    return stacks


def _wait_lines() -> set[tuple[str, int]]:
    """(function, line) of the blocking queue reads of worker threads py-spy cannot tell idle:
    aiosqlite's connection thread and the thread pool's worker, in the versions installed."""
    targets = (
        ("aiosqlite.core", "_connection_worker_thread", "tx.get("),
        ("concurrent.futures.thread", "_worker", "work_queue.get("),
    )
    found: set[tuple[str, int]] = set()
    for module_name, function, text in targets:
        try:
            module = importlib.import_module(module_name)
            source, first = inspect.getsourcelines(getattr(module, function))
        except (ImportError, AttributeError, OSError, TypeError):
            continue
        found.update((function, first + n) for n, line in enumerate(source) if text in line)
    return found


WAIT_LINES = _wait_lines()
WAIT_FUNCTIONS = ("Condition.wait", "Event.wait", "Thread.join")


def classify(leaf: str) -> str:
    """What a sample's leaf frame was doing: `wait` (a thread blocked on a queue or condition,
    which py-spy still counts as active), `loop` (the event loop in C: epoll or socket I/O),
    or `work` (Python code, or SQLite and other C code called from it)."""
    match = FRAME.match(leaf.strip())
    if match is None:
        return "work"
    function, line = match["function"], int(match["line"] or 0)
    if function in WAIT_FUNCTIONS or (function, line) in WAIT_LINES:
        return "wait"
    if function == "Runner.run" and match["file"].endswith("asyncio/runners.py"):
        return "loop"
    return "work"


@dataclass(frozen=True)
class Profile:
    """A process's samples: how many of each kind, and the functions of the working ones."""

    samples: int
    kinds: dict[str, int]
    hot: list[Hot]

    @property
    def working(self) -> int:
        """Samples in which a thread did work."""
        return self.kinds.get("work", 0)


def top_functions(lines: Iterable[str]) -> Profile:
    """Own and total samples of every function over the working samples, most own first."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for frames, count in parse_collapsed(lines):
        if not frames:
            continue
        kind = classify(frames[-1])
        kinds[kind] += count
        if kind != "work":
            continue
        names = [frame_name(f) for f in frames]
        own[names[-1]] += count
        for name in set(names):
            total[name] += count
    ranked = sorted(total, key=lambda name: (-own[name], -total[name], name))
    hot = [Hot(name, own[name], total[name]) for name in ranked]
    return Profile(sum(kinds.values()), dict(kinds), hot)


#: The parts of a service a working sample is counted to. From the leaf outwards, the first
#: frame in the project's own code or in one of these packages decides (so a query the saga
#: makes is the database's, the saga's own Python is the services'); frames of the standard
#: library outside these (uuid, datetime, contextlib, ...) count to whoever called them.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("database", ("/sqlalchemy/", "/sqlmodel/", "/aiosqlite/", "/asyncpg/", "/sqlite3/")),
    ("Kafka client", ("/aiokafka/", "/kafka/", "/faststream/")),
    ("HTTP client", ("/httpx/", "/httpcore/", "/aiohttp/", "/yarl/", "/multidict/")),
    ("HTTP server", ("/uvicorn/", "/starlette/", "/fastapi/", "/h11/")),
    ("logs", ("/logging/", "/structlog/")),
    ("messages", ("/jinja2/", "/babel/", "/email/", "/aiosmtplib/", "/markupsafe/")),
    ("events (pydantic, JSON)", ("/pydantic/", "/pydantic_core/", "/json/", "/esim_schemas/")),
    ("tracing, metrics", ("/opentelemetry/", "/prometheus_client/")),
    ("Redis", ("/redis/",)),
    ("event loop", ("/asyncio/", "/uvloop/", "/selectors.py")),
)
#: Leaf functions of the project that stand for a library's C code (SQLite runs inside this one).
_C_CALLS = {"InlineSqliteConnection._execute": "database"}


def part_of(frames: list[str]) -> str:
    """The part (see PARTS) a working sample's stack is counted to."""
    leaf = FRAME.match(frames[-1].strip())
    if leaf is not None and leaf["function"] in _C_CALLS:
        return _C_CALLS[leaf["function"]]
    for frame in reversed(frames):
        match = FRAME.match(frame.strip())
        path = f"/{match['file']}" if match is not None else frame
        for part, markers in PARTS:
            if any(marker in path for marker in markers):
                return part
        if _in_project(frame_name(frame)):
            return "services' own code"
    return "other"


def by_part(lines: Iterable[str]) -> Counter[str]:
    """Working samples per part of the service (see PARTS)."""
    parts: Counter[str] = Counter()
    for frames, count in parse_collapsed(lines):
        if frames and classify(frames[-1]) == "work":
            parts[part_of(frames)] += count
    return parts


def _in_project(name: str) -> bool:
    return any(f"({package}" in name for package in PROJECT_PACKAGES)


def summary(service: str, lines: Iterable[str], seconds: float, top: int = 15) -> str:
    """A short text: the share of each part of the service, the `top` functions by own time,
    then the project's by total time."""
    lines = list(lines)
    found = top_functions(lines)
    ticks = SAMPLE_RATE * seconds
    share = {kind: found.kinds.get(kind, 0) / ticks if ticks else 0.0 for kind in KINDS}
    out = [
        f"{service}: {found.samples} thread samples in {seconds:.0f} s at {SAMPLE_RATE} Hz;"
        f" per tick, threads working {share['work']:.2f}, blocked on a queue {share['wait']:.2f},"
        f" in the event loop's C code {share['loop']:.2f}",
        "",
        f"top {top} by own time (% of working samples):",
        "  own%  total%  function (file)",
    ]
    working = found.working
    if working == 0:
        return "\n".join([*out, "  (no working samples)"]) + "\n"
    parts = by_part(lines)
    out.insert(
        1,
        "where the time goes (% of working samples, by the innermost frame's library): "
        + ", ".join(f"{part} {count / working:.0%}" for part, count in parts.most_common()),
    )
    for item in found.hot[:top]:
        out.append(f"{item.own / working:6.1%}  {item.total / working:6.1%}  {item.name}")
    out += ["", f"top {top} of the project's own functions by total time (with what they call):"]
    ours = [h for h in found.hot if _in_project(h.name)]
    for item in sorted(ours, key=lambda h: (-h.total, h.name))[:top]:
        out.append(f"{item.own / working:6.1%}  {item.total / working:6.1%}  {item.name}")
    return "\n".join(out) + "\n"


KINDS = ("work", "wait", "loop")
