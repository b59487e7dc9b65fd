"""py-spy on the services during a phase, and the top functions by own time of its output.

`py-spy record --format raw` writes collapsed stacks, one `frame;frame;...;leaf count` line per
distinct stack (a frame is `function (file:line)`); the leaf is where the sample's time was
spent ("own" time), every frame of the stack shares it ("total" time). Idle threads are not
sampled (py-spy's default), so the percentages are of the time the process was doing something.
"""

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
PROJECT_TREES = ("services", "shared", "sandboxes")


def py_spy() -> str:
    """The py-spy executable of this environment."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise RuntimeError("py-spy is not installed; `make sync` installs the dev group")
    return found


def record(pid: int, output: Path, seconds: float, log: Path) -> subprocess.Popen[bytes]:
    """Start sampling a process for `seconds` (without pausing it); raw output to `output`."""
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
        "--nonblocking",
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
    """(frames root first, count) per line of py-spy's raw output."""
    stacks = []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        stacks.append(([frame_name(f) for f in stack.split(";") if f], int(count)))
    return stacks


def top_functions(lines: Iterable[str]) -> tuple[int, list[Hot]]:
    """The sample count, and every function with its own and total samples, most own first."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for frames, count in parse_collapsed(lines):
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for name in set(frames):
            total[name] += count
    ranked = sorted(total, key=lambda name: (-own[name], -total[name], name))
    return samples, [Hot(name, own[name], total[name]) for name in ranked]


def _in_project(name: str) -> bool:
    return any(f"({tree}/" in name for tree in PROJECT_TREES)


def summary(service: str, lines: Iterable[str], seconds: float, top: int = 15) -> str:
    """A short text: the `top` functions by own time, then by total time."""
    samples, hot = top_functions(lines)
    busy = samples / (SAMPLE_RATE * seconds) if seconds > 0 else 0.0
    out = [
        f"{service}: {samples} samples in {seconds:.0f} s at {SAMPLE_RATE} Hz"
        f" (a thread was active in {busy:.0%} of the ticks; idle time not sampled)",
        "",
        f"top {top} by own time:",
        "  own%  total%  function (file)",
    ]
    if samples == 0:
        return "\n".join([*out, "  (no samples)"]) + "\n"
    for item in hot[:top]:
        out.append(f"{item.own / samples:6.1%}  {item.total / samples:6.1%}  {item.name}")
    out += ["", f"top {top} of the project's own functions by total time (with what they call):"]
    ours = [h for h in hot if _in_project(h.name)]
    for item in sorted(ours, key=lambda h: (-h.total, h.name))[:top]:
        out.append(f"{item.own / samples:6.1%}  {item.total / samples:6.1%}  {item.name}")
    return "\n".join(out) + "\n"
