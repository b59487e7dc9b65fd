"""The bench's phases: the bare relay baseline and the platform, at a fixed rate and flat out."""

import asyncio
import contextlib
import fcntl
import json
import math
import os
import platform as host
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, AsyncExitStack, ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from esim_core.messaging.topics import PARTITIONS
from esim_schemas import (
    PaymentAuthorized,
    PaymentRequested,
    PaymentSettled,
    ProfileActivated,
    RenewalRequested,
)

from tests.bench import metrics, profile, soak, traces
from tests.bench.procstat import Sampler, find_roots, machine_busy_s
from tests.bench.report import (
    HOP_NAMES,
    PhaseResult,
    history_line,
    quantiles,
    ratios,
    render_table,
)
from tests.bench.stack import Stack, own_stack, running_stack
from tests.support.infra import ROOT, Process
from tests.support.load import (
    Card,
    LatencyStats,
    LoadDriver,
    Outcomes,
    Sent,
    Start,
    Target,
    setup_cards,
)

BASELINE_SUFFIX = ".bench-baseline"
#: The three hops, as the baseline relays copy them: consumed topic, produced topic, template.
HOPS = (
    (RenewalRequested.topic, PaymentRequested.topic, "payment_requested"),
    (PaymentRequested.topic, PaymentSettled.topic, "payment_settled"),
    (PaymentSettled.topic, ProfileActivated.topic, "activated"),
)
#: Column order of the resource table.
PROCESS_ORDER = (
    "accounts",
    "billing",
    "provisioning",
    "notifier",
    "esim-sandbox",
    "payment-sandbox",
    "smtp",
    "kafka",
    "redis",
    "postgres",
    "relays",
    "bench",
    "other",
)
#: The intermediate events of a renewal, watched to split its latency into hops.
STAGES = {
    PaymentRequested.topic: "payment_requested",
    PaymentAuthorized.topic: "payment_authorized",
    PaymentSettled.topic: "payment_settled",
}
PROFILED = ("accounts", "billing", "provisioning", "notifier", "esim-sandbox", "payment-sandbox")
#: A single Python process busier than this share of one core is probably what limits a phase.
BUSY_CORE = 0.7


@dataclass(frozen=True)
class PhaseSpec:
    """One phase: who is measured, how the renewals are asked for, at what rate, how long."""

    name: str
    kind: str  # "baseline" or "platform"
    via: str  # "relay" (baseline), "kafka" or "http"
    rate: float
    seconds: float


@dataclass(frozen=True)
class Config:
    """What one bench run does (see `python -m tests.bench --help`)."""

    db: str = "sqlite"
    stack: str = "own"
    quick: bool = False
    profile: bool = False
    #: Export the services' spans to the bench and show each platform phase's path (traces.py).
    trace: bool = False
    cards: int = 200
    cards_per_user: int = 1
    inventory: int = 0
    rate: float = 50
    seconds: float = 30
    http_seconds: float = 30
    flat_rate: float = 400
    flat_seconds: float = 60
    idle_rate: float = 1
    idle_seconds: float = 30
    #: The long run (`soak`, not among the default phases): memory, tables and latency over
    #: time at a modest rate (tests/bench/soak.py).
    soak_rate: float = 20
    soak_seconds: float = 1800
    soak_sample_s: float = 60
    #: Processes of each service on the own stack (more than one: PostgreSQL only).
    replicas: int = 1
    drain_s: float = 120
    start: Start = "now"
    phases: tuple[str, ...] = (
        "baseline-idle",
        "baseline",
        "baseline-flat",
        "idle",
        "kafka",
        "http",
        "kafka-flat",
    )
    out_dir: Path = ROOT / "var/bench"
    history: Path | None = ROOT / "bench/history.jsonl"

    def quick_version(self) -> "Config":
        """About two minutes in all: shorter phases and drains, the same rates."""
        return replace(
            self,
            quick=True,
            seconds=10,
            http_seconds=10,
            flat_seconds=10,
            idle_seconds=10,
            drain_s=10,
            cards=50,
            # Long enough to get past the soak's warm-up (its windows are two minutes).
            soak_seconds=300,
            soak_sample_s=20,
        )

    def soak_warm_up_s(self) -> float:
        """When the soak's series are judged from: its windows filled and purged twice over."""
        return min(
            soak.SOAK_WINDOW_S + 2 * soak.SOAK_PURGE_S + self.soak_sample_s, self.soak_seconds / 2
        )

    def specs(self) -> list[PhaseSpec]:
        """The phases to run, in the order given. The default runs the baselines first, while
        the platform is idle (a platform phase leaves a backlog that it goes on working through,
        which would take CPU from a baseline after it), and flat out last for the same reason.
        The idle phases (1 renewal a second) show what one renewal costs and waits when nothing
        else is going on: a hop's own latency, not a queue's."""
        fixed = f"{self.rate:g}"
        idle = f"{self.idle_rate:g}"
        every = {
            "baseline-idle": PhaseSpec(
                f"baseline-{idle}", "baseline", "relay", self.idle_rate, self.idle_seconds
            ),
            "idle": PhaseSpec(
                f"kafka-{idle}", "platform", "kafka", self.idle_rate, self.idle_seconds
            ),
            "baseline": PhaseSpec(
                f"baseline-{fixed}", "baseline", "relay", self.rate, self.seconds
            ),
            "kafka": PhaseSpec(f"kafka-{fixed}", "platform", "kafka", self.rate, self.seconds),
            "http": PhaseSpec(f"http-{fixed}", "platform", "http", self.rate, self.http_seconds),
            "baseline-flat": PhaseSpec(
                "baseline-flat", "baseline", "relay", self.flat_rate, self.flat_seconds
            ),
            "kafka-flat": PhaseSpec(
                "kafka-flat", "platform", "kafka", self.flat_rate, self.flat_seconds
            ),
            "soak": PhaseSpec(
                f"soak-{self.soak_rate:g}", "platform", "kafka", self.soak_rate, self.soak_seconds
            ),
        }
        unknown = set(self.phases) - set(every)
        if unknown:
            raise ValueError(f"unknown phases {sorted(unknown)}; known: {', '.join(every)}")
        return [every[key] for key in self.phases]


class Progress:
    """One status line: rewritten in place on a terminal, printed every 5 s otherwise."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._last = 0.0
        self._width = 0

    def show(self, text: str) -> None:
        """Show the current status."""
        if self.tty:
            self._width = max(self._width, len(text))
            self.stream.write("\r" + text.ljust(self._width))
            self.stream.flush()
        elif time.monotonic() - self._last >= 5:
            self._last = time.monotonic()
            print(text, file=self.stream, flush=True)

    def say(self, text: str) -> None:
        """A line of its own."""
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        print(text, file=self.stream, flush=True)


async def create_topics(bootstrap: str, names: Sequence[str], partitions: int = PARTITIONS) -> None:
    """Create topics like the services do (the declared partitions unless told), if missing."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        # An existing topic is an error code in the answer, not an exception: nothing to do.
        await admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    finally:
        await admin.close()


async def capture_events(
    target: Target, driver: LoadDriver, card: Card, start: Start, timeout: float = 120
) -> dict[str, dict[str, Any]]:
    """One renewal through the platform; its PaymentRequested, PaymentSettled and
    ProfileActivated as they were on the wire (the baseline's templates, a warm-up too)."""
    kinds = {hop[1]: hop[2] for hop in HOPS}
    async with Outcomes(target, kinds) as seen:
        renewal = await driver.publish_renewal(card, start=start)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = {o.kind: o.event for o in seen.by_renewal.get(renewal, [])}
            if set(events) >= set(kinds.values()):
                return events
            await asyncio.sleep(0.2)
    raise TimeoutError(
        f"the warm-up renewal {renewal} did not reach ProfileActivated within {timeout:.0f} s;"
        " is the platform up?"
    )


def wire_size(event: dict[str, Any]) -> int:
    """Bytes of an event as compact JSON (as the services write it)."""
    return len(json.dumps(event, separators=(",", ":")).encode())


class Baseline:
    """Three relay processes on `<topic>.bench-baseline`, each a bare consume-and-produce."""

    def __init__(self, target: Target, templates: dict[str, dict[str, Any]], workdir: Path):
        self.target = Target(
            target.accounts_url, target.kafka, target.topic_suffix + BASELINE_SUFFIX
        )
        self.templates = templates
        self.workdir = workdir
        self.processes: list[Process] = []

    async def start(self) -> None:
        """Create the topics and start the relays; wait until each holds its partitions."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        await create_topics(
            self.target.kafka, [self.target.topic(t) for t in (HOPS[0][0], *(h[1] for h in HOPS))]
        )
        run = os.urandom(4).hex()
        for number, (source, sink, kind) in enumerate(HOPS, start=1):
            template = self.workdir / f"{kind}.json"
            template.write_text(json.dumps(self.templates[kind]))
            ready = self.workdir / f"relay-{number}.ready"
            ready.unlink(missing_ok=True)
            argv = [
                sys.executable,
                "-m",
                "tests.bench.relay",
                "--bootstrap",
                self.target.kafka,
                "--source",
                self.target.topic(source),
                "--target",
                self.target.topic(sink),
                "--template",
                str(template),
                "--group",
                f"bench-baseline-{number}-{run}",
                "--ready-file",
                str(ready),
            ]
            self.processes.append(
                Process(
                    f"relay-{number}",
                    argv,
                    {"PYTHONPATH": str(ROOT)},
                    self.workdir / f"relay-{number}.log",
                    ready.exists,
                ).launch()
            )
        for process in self.processes:
            process.wait_ready(90)

    def stages(self) -> dict[str, str]:
        """The watched intermediate events the relays carry: a hold has no relay hop."""
        relayed = {sink for _, sink, _ in HOPS}
        return {topic: stage for topic, stage in STAGES.items() if topic in relayed}

    def pids(self) -> tuple[int, ...]:
        """The relays' process ids."""
        return tuple(p.popen.pid for p in self.processes if p.popen is not None)

    def stop(self) -> None:
        """Stop the relays."""
        for process in self.processes:
            process.stop(timeout=10)


@dataclass
class Measured:
    """A run's results and what is needed to write them."""

    config: Config
    stack: Stack
    phases: list[PhaseResult] = field(default_factory=list)
    event_sizes: dict[str, int] = field(default_factory=dict)
    setup_s: float = 0.0
    warmup_s: float = 0.0
    profiles: dict[str, str] = field(default_factory=dict)
    #: The soak phase's samples and verdicts (`soak.Watch`, `soak.judge`), when it ran.
    soak_samples: list[soak.Sample] = field(default_factory=list)
    soak_verdicts: list[soak.Verdict] = field(default_factory=list)
    #: Each phase's wall-clock window, from its load's start to its drain's end (ns).
    windows: dict[str, tuple[int, int]] = field(default_factory=dict)


class Bench:
    """Runs the phases against one stack and keeps the results."""

    def __init__(self, config: Config, stack: Stack, progress: Progress) -> None:
        self.config = config
        self.stack = stack
        self.progress = progress
        self.measured = Measured(config, stack)
        roots: dict[str, tuple[int, ...]] = dict(stack.pids)
        found = find_roots({k: v for k, v in stack.ports.items() if k not in stack.pids})
        roots.update({name: (pid,) for name, pid in found.items()})
        roots["bench"] = (os.getpid(),)
        self.sampler = Sampler(roots, alone=frozenset({"bench"}))
        self.pending: set[str] = set()  # platform renewals of earlier phases not ended yet

    async def run(self) -> Measured:
        """Set up cards, capture real events, then run every phase."""
        config, target = self.config, self.stack.target
        began = time.monotonic()
        self.progress.say(f"==> bench: binding {config.cards} cards to travellers")
        cards = await setup_cards(
            target,
            config.cards,
            inventory=self.stack.cards_csv,
            cards_per_user=config.cards_per_user,
        )
        self.measured.setup_s = time.monotonic() - began
        self.sampler.start()
        specs = config.specs()
        try:
            async with (
                Outcomes(target) as outcomes,
                Outcomes(target, STAGES) as stages,
                LoadDriver(target, source="/frontends/bench") as driver,
            ):
                self.progress.say("==> bench: one warm-up renewal (its events size the baseline)")
                warm = time.monotonic()
                templates = await capture_events(target, driver, cards[0], config.start)
                self.measured.warmup_s = time.monotonic() - warm
                sizes = {"renewal_requested": len(driver.renewal_requested(cards[0]))}
                sizes.update({kind: wire_size(event) for kind, event in templates.items()})
                self.measured.event_sizes = sizes
                baseline = Baseline(target, templates, config.out_dir / "baseline")
                try:
                    async with AsyncExitStack() as relay:
                        if any(spec.kind == "baseline" for spec in specs):
                            await baseline.start()
                            self.sampler.add("relays", *baseline.pids())
                            # The relays' topics exist only once they run: no baseline phase,
                            # no waiting for them.
                            relayed = await relay.enter_async_context(
                                Outcomes(baseline.target, {ProfileActivated.topic: "activated"})
                            )
                            relay_stages = await relay.enter_async_context(
                                Outcomes(baseline.target, baseline.stages())
                            )
                            relay_driver = await relay.enter_async_context(
                                LoadDriver(baseline.target, source="/frontends/bench")
                            )
                        for spec in specs:
                            began_ns = time.time_ns()
                            if spec.kind == "baseline":
                                result = await self.phase(
                                    spec, relay_driver, relayed, relay_stages, cards
                                )
                            else:
                                result = await self.phase(spec, driver, outcomes, stages, cards)
                            self.measured.phases.append(result)
                            self.measured.windows[spec.name] = (began_ns, time.time_ns())
                            self.progress.say(summary_line(result))
                finally:
                    baseline.stop()
        finally:
            self.sampler.stop()
        return self.measured

    async def phase(
        self,
        spec: PhaseSpec,
        driver: LoadDriver,
        outcomes: Outcomes,
        stages: Outcomes,
        cards: Sequence[Card],
    ) -> PhaseResult:
        """Offer the phase's load, then drain (bounded); measure it all."""
        config = self.config
        backlog = {r for r in self.pending if outcomes.first(r) is None}
        first_index = len(driver.sent)
        counters = await asyncio.to_thread(metrics.snapshot, self.stack.service_urls)
        began = time.monotonic()
        busy_before = machine_busy_s()
        self.sampler.begin()
        stage = "load"

        def tick() -> None:
            ids = list(driver.sent)[first_index:]
            done = sum(1 for r in ids if outcomes.first(r) is not None)
            elapsed = time.monotonic() - began
            self.progress.show(
                f"[{spec.name} {stage}] {elapsed:5.0f} s  sent {len(ids)}  done {done}"
                f"  ({done / elapsed if elapsed else 0:.1f}/s)"
            )

        profilers = self.start_profilers(spec)
        watching = self.watch_soak(spec, driver, outcomes, first_index)
        if spec.via == "http":
            sent = await driver.run_http_at_rate(
                cards, spec.rate, spec.seconds, start=config.start, on_tick=tick
            )
        else:
            sent = await driver.run_at_rate(
                cards, spec.rate, spec.seconds, start=config.start, on_tick=tick
            )
        load_end = time.monotonic()
        stage = "drain"
        ids = [s.renewal_id for s in sent]
        await outcomes.wait_for(ids, config.drain_s, on_tick=tick)
        drain_end = time.monotonic()
        if watching is not None:
            await self.finish_soak(watching)
        # What had ended by now, taken before anything else awaits (outcomes keep arriving).
        ended = {r: o for r in ids if (o := outcomes.first(r)) is not None}
        missing = {r for r in ids if r not in ended}
        usage = self.sampler.window()
        busy = machine_busy_s() - busy_before
        handling = metrics.by_service(
            metrics.difference(
                counters,
                await asyncio.to_thread(metrics.snapshot, self.stack.service_urls),
                drain_end - began,
            )
        )
        self.finish_profilers(profilers, spec)
        if spec.kind == "platform":
            self.pending = {r for r in self.pending | set(missing) if outcomes.first(r) is None}

        first_at = min((s.at for s in sent), default=began)
        last_at = max((s.at for s in sent), default=load_end)
        window = last_at - first_at + 1 / spec.rate
        activated = {r for r, o in ended.items() if o.kind == "activated"}
        in_window = sum(1 for r in activated if ended[r].at <= first_at + window)
        # Every activation seen in the window, whichever phase asked for it: what the platform
        # got through while saturated, even when it was still working on an earlier backlog.
        any_in_window = sum(
            1
            for seen in outcomes.by_renewal.values()
            if seen[0].kind == "activated" and first_at <= seen[0].at <= first_at + window
        )
        others: dict[str, int] = {}
        for o in ended.values():
            if o.kind != "activated":
                others[o.kind] = others.get(o.kind, 0) + 1
        done_latencies = [ended[s.renewal_id].at - s.at for s in sent if s.renewal_id in activated]
        waiting = [drain_end - s.at for s in sent if s.renewal_id in missing]
        resources = {
            name: {"cpu_s": round(u.cpu_s, 2), "peak_rss_mb": round(u.peak_rss_mb, 1)}
            for name, u in usage.items()
        }
        ours = sum(u.cpu_s for u in usage.values())
        resources["other"] = {"cpu_s": round(max(0.0, busy - ours), 2)}
        result = PhaseResult(
            name=spec.name,
            kind=spec.kind,
            via=spec.via,
            rate=spec.rate,
            seconds=spec.seconds,
            sent=len(sent),
            load_window_s=round(window, 3),
            completed_in_window=in_window,
            activations_in_window=any_in_window,
            completed=len(activated),
            other_outcomes=others,
            not_completed=len(missing),
            drain_s=round(drain_end - load_end, 2),
            latency=quantiles(done_latencies, waiting),
            latency_done=LatencyStats.of(done_latencies).as_dict(),
            resources=resources,
            hops=hop_latencies(sent, stages, outcomes, drain_end),
            handling=handling if spec.kind == "platform" else {},
            wall_s=round(drain_end - began, 2),
            backlog_at_start=len(backlog),
            http_errors=len(driver.http_errors),
            http_answer=LatencyStats.of(driver.http_answer_s).as_dict()
            if spec.via == "http"
            else {},
        )
        driver.http_errors.clear()
        driver.http_answer_s.clear()
        result.notes = phase_notes(result, busy, os.cpu_count() or 1, config.drain_s)
        return result

    def watch_soak(
        self, spec: PhaseSpec, driver: LoadDriver, outcomes: Outcomes, first_index: int
    ) -> "tuple[soak.Watch, asyncio.Task[None], asyncio.Event] | None":
        """Sample memory, tables and latency through a soak phase (and its drain)."""
        if not spec.name.startswith("soak-"):
            return None
        roots = {name: pids for name, pids in self.sampler.roots.items() if name != "bench"}
        watch = soak.Watch(self.stack.databases, roots, self.config.soak_sample_s)
        done = asyncio.Event()

        async def sampling() -> None:
            while not done.is_set():
                await watch.sample(list(driver.sent.values())[first_index:], outcomes)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), 1.0)
            await watch.sample(list(driver.sent.values())[first_index:], outcomes, force=True)

        return watch, asyncio.create_task(sampling()), done

    async def finish_soak(
        self, watching: "tuple[soak.Watch, asyncio.Task[None], asyncio.Event]"
    ) -> None:
        """Take the last sample and judge every series."""
        watch, task, done = watching
        done.set()
        await task
        self.measured.soak_samples = watch.samples
        self.measured.soak_verdicts = soak.judge(
            watch.samples, self.config.soak_warm_up_s(), self.config.soak_rate
        )

    def start_profilers(self, spec: PhaseSpec) -> dict[str, Any]:
        """py-spy on the services during the flat-out platform phase, with PROFILE=1."""
        if not (self.config.profile and spec.name == "kafka-flat"):
            return {}
        out = self.config.out_dir / "profile"
        out.mkdir(parents=True, exist_ok=True)
        running = {}
        for name in PROFILED:
            pids = self.sampler.roots.get(name)
            if pids:
                raw = out / f"{name}.raw.txt"
                raw.unlink(missing_ok=True)
                running[name] = profile.record(pids[0], raw, spec.seconds, out / "py-spy.log")
        self.progress.say(f"==> py-spy on {', '.join(running)} for {spec.seconds:.0f} s")
        return running

    def finish_profilers(self, running: dict[str, Any], spec: PhaseSpec) -> None:
        """Wait for py-spy and write each service's top functions."""
        out = self.config.out_dir / "profile"
        for name, process in running.items():
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
            raw = out / f"{name}.raw.txt"
            if not raw.exists():
                self.measured.profiles[name] = f"{name}: py-spy wrote nothing; see py-spy.log\n"
                continue
            text = profile.summary(name, raw.read_text().splitlines(), spec.seconds)
            (out / f"{name}.top.txt").write_text(text)
            self.measured.profiles[name] = text


def hop_latencies(
    sent: Sequence[Sent], stages: Outcomes, outcomes: Outcomes, cutoff: float
) -> dict[str, dict[str, float | int | None]]:
    """Each hop's latency (from the event before it was seen to its own event being seen), over
    the renewals that got that far by `cutoff`: where the time of a renewal goes."""

    def seen(found: Outcomes, renewal: str, kind: str) -> float | None:
        o = found.first_of(renewal, kind)
        return o.at if o is not None and o.at <= cutoff else None

    samples: list[list[float]] = [[] for _ in HOP_NAMES]
    for request in sent:
        paid = [
            at
            for at in (
                seen(stages, request.renewal_id, "payment_authorized"),
                seen(stages, request.renewal_id, "payment_settled"),
            )
            if at is not None
        ]
        times = [
            request.at,
            seen(stages, request.renewal_id, "payment_requested"),
            min(paid, default=None),
            seen(outcomes, request.renewal_id, "activated"),
        ]
        for index in range(len(HOP_NAMES)):
            start, end = times[index], times[index + 1]
            if start is not None and end is not None:
                samples[index].append(end - start)
    return {
        name: LatencyStats.of(values).as_dict()
        for name, values in zip(HOP_NAMES, samples, strict=True)
    }


def phase_notes(result: PhaseResult, busy_s: float, cores: int, drain_s: float) -> list[str]:
    """What a reader should know about a phase: what did not finish, what looked saturated."""
    notes = []
    wall = result.wall_s
    if result.not_completed:
        notes.append(
            f"{result.not_completed} of {result.sent} renewals not activated within the"
            f" {drain_s:.0f} s drain (their latency counts as a lower bound, shown as >)"
        )
    if result.backlog_at_start:
        notes.append(
            f"{result.backlog_at_start} renewals of earlier phases were still in flight"
            " when it started"
        )
    if result.http_errors:
        notes.append(f"{result.http_errors} HTTP renewal requests were refused or failed")
    if result.http_answer.get("count"):
        answer = result.http_answer
        notes.append(
            f"the API answered 202 in p50 {answer['p50']} s, p99 {answer['p99']} s,"
            f" max {answer['max']} s"
        )
    for name, usage in result.resources.items():
        share = usage["cpu_s"] / wall if wall > 0 else 0.0
        if name in ("other", "kafka", "postgres", "relays") or share < BUSY_CORE:
            continue
        if name.endswith("-sandbox"):
            notes.append(
                f"the {name.removesuffix('-sandbox')} SANDBOX used {share:.0%} of a core: the"
                " sandbox itself may be the bottleneck of this phase"
            )
        else:
            notes.append(f"{name} used {share:.0%} of a core (one Python process: near its limit)")
    if wall > 0:
        other = result.resources.get("other", {}).get("cpu_s", 0.0)
        notes.append(
            f"machine busy {busy_s / wall:.2f} of {cores} cores;"
            f" {other / wall:.2f} of them outside this bench's processes"
        )
    return notes


def summary_line(result: PhaseResult) -> str:
    """One line per finished phase."""
    return (
        f"==> {result.name}: offered {result.offered_per_s:.1f}/s, done {result.done_per_s:.1f}/s"
        f" in the window, {result.completed}/{result.sent} activated,"
        f" p50 {result.latency['p50'].text()} s, p99 {result.latency['p99'].text()} s"
    )


def git(*args: str) -> str:
    """A git command's output in the repository, or '' if git fails."""
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return host.processor()


def run_meta(config: Config, stack: Stack) -> dict[str, Any]:
    """Who measured what, where: for the history line."""
    return {
        "commit": git("rev-parse", "HEAD"),
        "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        # The history file is the bench's own output: a change to it is not a change measured.
        "dirty": bool(
            git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/history.jsonl")
        ),
        "date": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "db": stack.db,
        "replicas": config.replicas,
        "stack": stack.mode,
        "quick": config.quick,
        "profile": config.profile,
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "python": host.python_version(),
        "cards": config.cards,
        "start": config.start,
    }


def write_results(measured: Measured, table: str) -> dict[str, Any]:
    """var/bench/latest.json and latest.txt, and one more line in the history file."""
    config = measured.config
    meta = run_meta(config, measured.stack)
    document = {
        "meta": meta,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "event_sizes_bytes": measured.event_sizes,
        "setup_s": round(measured.setup_s, 1),
        "warmup_renewal_s": round(measured.warmup_s, 3),
        "stack_notes": measured.stack.notes,
        "phases": [phase.as_dict() for phase in measured.phases],
        "ratios": ratios(measured.phases),
        "soak": {
            "env": soak.SOAK_ENV if measured.stack.mode == "own" else {},
            "warm_up_s": config.soak_warm_up_s(),
            "samples": [asdict(sample) for sample in measured.soak_samples],
            "verdicts": [verdict.as_dict() for verdict in measured.soak_verdicts],
        }
        if measured.soak_samples
        else None,
        "table": table,
    }
    config.out_dir.mkdir(parents=True, exist_ok=True)
    (config.out_dir / "latest.json").write_text(json.dumps(document, indent=2, default=_json))
    (config.out_dir / "latest.txt").write_text(table + "\n")
    line = history_line(measured.phases, meta)
    if config.history is not None:
        config.history.parent.mkdir(parents=True, exist_ok=True)
        with config.history.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line, separators=(",", ":"), default=_json) + "\n")
    return document


def traced_paths(measured: Measured, spans: Sequence[traces.Span]) -> str:
    """Each platform phase's most common path to ProfileActivated, step by step."""
    end = f"publish {ProfileActivated.topic}"
    return "\n\n".join(
        traces.render(
            phase.name,
            traces.summarize(traces.paths(spans, end, *measured.windows[phase.name])),
        )
        for phase in measured.phases
        if phase.kind == "platform" and phase.name in measured.windows
    )


def _json(value: object) -> object:
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


@contextmanager
def one_bench_at_a_time(out_dir: Path) -> Iterator[None]:
    """Hold `out_dir`'s lock for the run: a second bench would empty the first one's stack
    directory (its broker's data among it) and measure the first one's load as its own."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / ".lock").open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise SystemExit(
                f"another bench ({holder}) is running on {out_dir}; wait for it or stop it"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}\n")
        lock.flush()
        yield


def execute(config: Config, progress: Progress, out: Callable[[str], None] = print) -> int:
    """Bring up (or find) the stack, run the bench, print and write the results."""
    with one_bench_at_a_time(config.out_dir):
        return _execute(config, progress, out)


def _execute(config: Config, progress: Progress, out: Callable[[str], None]) -> int:
    progress.say(
        f"==> bench: {config.stack} stack on {config.db}"
        + (" (quick)" if config.quick else "")
        + (" with py-spy" if config.profile else "")
    )
    with ExitStack() as exits:
        env = dict(soak.SOAK_ENV) if "soak" in config.phases else {}
        receiver = exits.enter_context(traces.Receiver()) if config.trace else None
        if receiver is not None:
            env.update(receiver.environment())
        opener = (
            running_stack(config.db)
            if config.stack == "running"
            else own_stack(
                config.out_dir / "stack", config.db, config.inventory, env, config.replicas
            )
        )
        return _measure(config, progress, out, opener, receiver)


def _measure(
    config: Config,
    progress: Progress,
    out: Callable[[str], None],
    opener: AbstractContextManager[Stack],
    receiver: traces.Receiver | None,
) -> int:
    with opener as stack:
        measured = asyncio.run(Bench(config, stack, progress).run())
        header = (
            f"bench {config.db} {stack.mode} stack, {os.cpu_count()} cores,"
            + (f" {config.replicas} replicas of each service," if config.replicas > 1 else "")
            + f" start={config.start}, {config.cards} cards"
            f"; event bytes {measured.event_sizes}"
            f"\none renewal alone on the idle platform (warm-up): {measured.warmup_s:.2f} s"
        )
        table = header + "\n" + render_table(measured.phases, PROCESS_ORDER)
        if measured.soak_samples:
            table += "\n\n" + soak.render(
                measured.soak_samples, measured.soak_verdicts, config.soak_warm_up_s()
            )
            if stack.mode == "running":
                table += "\n(running stack: its rows are not counted and its windows are its own)"
        if stack.notes:
            table += "\n" + "\n".join(stack.notes)
    if receiver is not None:
        # The stack has stopped: every service flushed its last spans on the way out.
        table += "\n\n" + traced_paths(measured, receiver.taken())
    write_results(measured, table)
    out(table)
    for text in measured.profiles.values():
        out("")
        out("\n".join(text.splitlines()[:19]))
    out(f"\nwritten: {config.out_dir / 'latest.json'}")
    if config.history is not None:
        out(f"appended: {config.history}")
    return 0
