"""What a bench run found, as numbers (JSON), a small table and one history line; pure code."""

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tests.support.load import LatencyStats

#: A renewal's three hops, each named by the event that ends it. The payment hop ends at the
#: first of `payment.authorized` (a hold, captured only after the activation, off the
#: activation's path) and `payment.settled` (paid at once; the baseline's relay).
HOP_NAMES = ("payment.requested", "payment.authorized|settled", "profile.activated")
#: The platform's own processes: their CPU per renewal is the headline cost.
SERVICES = ("accounts", "billing", "provisioning", "notifier")
QUANTILES = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("max", 100.0))


@dataclass(frozen=True)
class Quantile:
    """A latency quantile; `lower_bound` when unfinished renewals make it at least this."""

    value: float | None
    lower_bound: bool = False

    def text(self, digits: int = 3) -> str:
        """`1.234`, `>120` or `-`."""
        if self.value is None:
            return "-"
        shown = f"{self.value:.{digits}f}" if self.value < 10 else f"{self.value:.1f}"
        return (">" if self.lower_bound else "") + shown


def quantiles(done: Iterable[float], waiting: Iterable[float]) -> dict[str, Quantile]:
    """p50/p95/p99/max over every renewal sent, nearest rank.

    `done` are the latencies of the renewals that completed; `waiting` how long each of the
    others had waited when the bench stopped looking. An unfinished renewal's latency is at
    least its wait, so a quantile is exact only while every sample at or below its rank is a
    finished one; otherwise it is reported as a lower bound.
    """
    samples = sorted([(v, False) for v in done] + [(v, True) for v in waiting])
    if not samples:
        return {name: Quantile(None) for name, _ in QUANTILES}
    result = {}
    censored_so_far = [False] * len(samples)
    seen = False
    for index, (_, censored) in enumerate(samples):
        seen = seen or censored
        censored_so_far[index] = seen
    for name, q in QUANTILES:
        rank = max(1, math.ceil(q / 100 * len(samples)))
        value, _ = samples[rank - 1]
        result[name] = Quantile(round(value, 4), censored_so_far[rank - 1])
    return result


@dataclass
class PhaseResult:
    """One phase: load at a rate for some seconds, then a bounded drain."""

    name: str
    kind: str  # "baseline" or "platform"
    via: str  # "relay", "kafka" or "http"
    rate: float
    seconds: float
    sent: int
    load_window_s: float
    completed_in_window: int
    activations_in_window: int
    completed: int
    other_outcomes: dict[str, int]
    not_completed: int
    drain_s: float
    latency: dict[str, Quantile]
    latency_done: dict[str, float | int | None]
    resources: dict[str, dict[str, float]]
    #: Per hop (HOP_NAMES): latency stats of the renewals that got through it.
    hops: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    #: Per service, from its /metrics: events handled, mean ms, handler busy share, published.
    handling: dict[str, dict[str, float]] = field(default_factory=dict)
    #: From the first request to the end of the drain.
    wall_s: float = 0.0
    backlog_at_start: int = 0
    http_errors: int = 0
    #: Latency stats of the API's 202 answers (HTTP phases).
    http_answer: dict[str, float | int | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def offered_per_s(self) -> float:
        """What was actually offered: sent over the load window."""
        return self.sent / self.load_window_s if self.load_window_s > 0 else 0.0

    @property
    def all_done_per_s(self) -> float:
        """Activations of any phase's renewals seen in the load window, per second of it."""
        return self.activations_in_window / self.load_window_s if self.load_window_s > 0 else 0.0

    @property
    def done_per_s(self) -> float:
        """Renewals of this phase completed within the load window, per second of it."""
        return self.completed_in_window / self.load_window_s if self.load_window_s > 0 else 0.0

    @property
    def ended(self) -> int:
        """This phase's renewals that reached a terminal state (activated or not)."""
        return self.completed + sum(self.other_outcomes.values())

    def per_renewal(self) -> dict[str, dict[str, float]]:
        """CPU ms per process tree, and database transactions and statements per service, per
        renewal of this phase that ended. A saturated phase's figures also carry the work done
        on renewals that had not ended, and on an earlier phase's backlog."""
        if not self.ended:
            return {}
        found: dict[str, dict[str, float]] = {}
        for name, usage in self.resources.items():
            found.setdefault(name, {})["cpu_ms"] = round(1000 * usage["cpu_s"] / self.ended, 2)
        for name, figures in self.handling.items():
            for key in ("transactions", "statements"):
                if key in figures:
                    found.setdefault(name, {})[key] = round(figures[key] / self.ended, 2)
        return found

    def cpu_ms_per_renewal(self) -> float | None:
        """The headline cost: CPU ms per renewal that ended, of the four services together on a
        platform phase, of the relays on a baseline phase (broker, sandboxes and load apart)."""
        per = self.per_renewal()
        payers = ("relays",) if self.kind == "baseline" else SERVICES
        if not any(name in per for name in payers):
            return None
        return round(sum(per.get(name, {}).get("cpu_ms", 0.0) for name in payers), 2)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly."""
        values = asdict(self)
        values["latency"] = {k: asdict(v) for k, v in self.latency.items()}
        values["offered_per_s"] = round(self.offered_per_s, 2)
        values["done_per_s"] = round(self.done_per_s, 2)
        values["all_done_per_s"] = round(self.all_done_per_s, 2)
        values["per_renewal"] = self.per_renewal()
        return values


def latency_stats_dict(samples: Iterable[float]) -> dict[str, float | int | None]:
    """LatencyStats of the completed renewals, JSON-friendly."""
    return LatencyStats.of(samples).as_dict()


def baseline_of(name: str) -> str:
    """The baseline phase a platform phase is compared with: `kafka-50` -> `baseline-50`."""
    return "baseline-" + name.split("-", 1)[-1]


def ratios(phases: Sequence[PhaseResult]) -> dict[str, dict[str, Any]]:
    """Platform over baseline: throughput (done/s) and latency (p50, p99) ratios per phase."""
    by_name = {phase.name: phase for phase in phases}
    result: dict[str, dict[str, Any]] = {}
    for phase in phases:
        base = by_name.get(baseline_of(phase.name))
        if phase.kind != "platform" or base is None:
            continue
        result[phase.name] = {
            "baseline": base.name,
            # all/s: a saturated platform works through earlier phases' backlog first, so
            # what it completes per second is its throughput, whoever asked for the renewals.
            "throughput": _ratio(phase.all_done_per_s, base.all_done_per_s),
            "p50": _ratio(phase.latency["p50"].value, base.latency["p50"].value),
            "p99": _ratio(phase.latency["p99"].value, base.latency["p99"].value),
            "cpu": _ratio(phase.cpu_ms_per_renewal(), base.cpu_ms_per_renewal()),
        }
    return result


def _ratio(top: float | None, bottom: float | None) -> float | None:
    if top is None or bottom is None or bottom == 0:
        return None
    return round(top / bottom, 4)


def _fmt_ratio(value: float | None, lower_bound: bool = False) -> str:
    if value is None:
        return "-"
    text = f"{value:.2f}x" if value < 100 else f"{value:.0f}x"
    return (">" if lower_bound else "") + text


def render_table(phases: Sequence[PhaseResult], order: Sequence[str]) -> str:
    """The results table, then CPU seconds and peak RSS per process tree and phase."""
    found = ratios(phases)
    head = (
        "phase",
        "via",
        "offered/s",
        "sent",
        "done",
        "not done",
        "done/s",
        "all/s",
        "p50 s",
        "p95 s",
        "p99 s",
        "max s",
        "thru ratio",
        "p50 ratio",
        "p99 ratio",
        "cpu ms",
        "cpu ratio",
    )
    rows: list[tuple[str, ...]] = [head]
    for phase in phases:
        ratio = found.get(phase.name, {})
        rows.append(
            (
                phase.name,
                phase.via,
                f"{phase.offered_per_s:.1f}",
                str(phase.sent),
                str(phase.completed),
                str(phase.not_completed),
                f"{phase.done_per_s:.1f}",
                f"{phase.all_done_per_s:.1f}",
                *(phase.latency[name].text() for name in ("p50", "p95", "p99", "max")),
                _fmt_ratio(ratio.get("throughput")),
                _fmt_ratio(ratio.get("p50"), phase.latency["p50"].lower_bound),
                _fmt_ratio(ratio.get("p99"), phase.latency["p99"].lower_bound),
                _cpu(phase.cpu_ms_per_renewal()),
                _fmt_ratio(ratio.get("cpu")),
            )
        )
    lines = _columns(rows)
    lines += [
        "done/s: this phase's renewals activated within its load window, per second;"
        " all/s: every activation seen then (earlier phases' backlog too);"
        " ratios: platform / baseline, throughput from all/s (> : at least, some renewals"
        " never finished); cpu ms: CPU per renewal that ended, of the four services together"
        " (a baseline: of its relays), the broker, sandboxes and load apart",
    ]
    names = [n for n in order if any(n in phase.resources for phase in phases)]
    if names:
        lines += ["", "CPU seconds / peak RSS MiB per process tree, load + drain of each phase:"]
        usage_rows: list[tuple[str, ...]] = [("phase", "wall s", *names)]
        for phase in phases:
            wall = phase.wall_s or phase.load_window_s + phase.drain_s
            cells = []
            for name in names:
                usage = phase.resources.get(name)
                if usage is None:
                    cells.append("-")
                elif "peak_rss_mb" in usage:
                    cells.append(f"{usage['cpu_s']:.1f}/{usage['peak_rss_mb']:.0f}")
                else:
                    cells.append(f"{usage['cpu_s']:.1f}")
            usage_rows.append((phase.name, f"{wall:.0f}", *cells))
        lines += _columns(usage_rows)
    if names and any(phase.ended for phase in phases):
        lines += [
            "",
            "Per renewal that ended in the phase: CPU ms per process tree, and for each service"
            " the database transactions + statements it took (tx+st):",
        ]
        per_rows: list[tuple[str, ...]] = [("phase", "ended", *names)]
        for phase in phases:
            per = phase.per_renewal()
            if not per:
                continue
            cells = []
            for name in names:
                figures = per.get(name, {})
                cell = f"{figures['cpu_ms']:.1f}" if "cpu_ms" in figures else "-"
                if "transactions" in figures:
                    cell += f" {figures['transactions']:.1f}+{figures.get('statements', 0):.0f}"
                cells.append(cell)
            per_rows.append((phase.name, str(phase.ended), *cells))
        lines += _columns(per_rows)
    if any(phase.hops for phase in phases):
        lines += [
            "",
            "Per hop, p50/p95 s (renewals that got through it), from the event before to its own:",
        ]
        hop_rows: list[tuple[str, ...]] = [("phase", *(f"-> {name}" for name in HOP_NAMES))]
        for phase in phases:
            cells = []
            for name in HOP_NAMES:
                hop = phase.hops.get(name, {})
                if not hop or not hop.get("count"):
                    cells.append("-")
                    continue
                cells.append(f"{_seconds(hop['p50'])}/{_seconds(hop['p95'])} ({hop['count']})")
            hop_rows.append((phase.name, *cells))
        lines += _columns(hop_rows)
    handled = [phase for phase in phases if phase.handling]
    if handled:
        services = sorted({name for phase in handled for name in phase.handling})
        lines += [
            "",
            "Per service, from its /metrics: events handled, mean ms in the handler,"
            " share of the phase its consumer spent in handlers:",
        ]
        rows = [("phase", *services)]
        for phase in handled:
            cells = []
            for name in services:
                h = phase.handling.get(name)
                cells.append(
                    "-"
                    if h is None
                    else f"{h['events']:.0f} ev {h['mean_ms']:.0f} ms {h['handler_busy']:.0%}"
                )
            rows.append((phase.name, *cells))
        lines += _columns(rows)
    notes = [f"{phase.name}: {note}" for phase in phases for note in phase.notes]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def _cpu(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _seconds(value: object) -> str:
    if not isinstance(value, int | float):
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for index, row in enumerate(rows):
        cells = [
            cell.ljust(widths[i]) if i < 2 or index == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(row)
        ]
        out.append("  ".join(cells).rstrip())
    return out


def history_line(phases: Sequence[PhaseResult], meta: Mapping[str, Any]) -> dict[str, Any]:
    """One line of bench/history.jsonl: who measured what where, and the headline figures."""
    found = ratios(phases)
    return {
        **meta,
        "phases": {
            phase.name: {
                "offered_per_s": round(phase.offered_per_s, 2),
                "done_per_s": round(phase.done_per_s, 2),
                "all_done_per_s": round(phase.all_done_per_s, 2),
                "sent": phase.sent,
                "completed": phase.completed,
                "not_completed": phase.not_completed,
                "p50_s": phase.latency["p50"].value,
                "p99_s": phase.latency["p99"].value,
                "p50_lower_bound": phase.latency["p50"].lower_bound,
                "p99_lower_bound": phase.latency["p99"].lower_bound,
                "cpu_ms_per_renewal": phase.cpu_ms_per_renewal(),
            }
            for phase in phases
        },
        "ratios": found,
    }
