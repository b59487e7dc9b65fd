"""What a chaos run does, read from `CHAOS_*` environment variables (the Makefile sets them)."""

import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.support.infra import DATABASE_MODES, ROOT


class ConfigError(ValueError):
    """A `CHAOS_*` variable that cannot be used; the message names it."""


def _number(name: str, default: float, *, low: float, high: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw}: expected a number from {low:g} to {high:g}")
    return value


@dataclass(frozen=True)
class ChaosConfig:
    """The settings of one run; every field has a `CHAOS_<FIELD>` variable."""

    #: Seconds of steady load, with crashes meanwhile.
    seconds: float = 300.0
    #: Renewals a second (all kinds together).
    rate: float = 10.0
    #: Cards bound to travellers; renewals cycle over them.
    cards: int = 60
    #: Cards whose every bundle order fails at the eSIM sandbox (fault `fail`), and cards
    #: whose platform calls fail twice now and then (fault `flaky`, re-armed every few seconds).
    failing_cards: int = 6
    flaky_cards: int = 6
    #: `sqlite` (a file per service) or `postgres` (a database per service).
    db: str = "sqlite"
    #: Processes of each service (`billing`, `billing-2`, ...), sharing its database, consumer
    #: group and leases; the crashes hit one process at a time. More than one needs `postgres`.
    replicas: int = 1
    #: Seconds between two actions on the services (drawn from this range).
    every_min_s: float = 20.0
    every_max_s: float = 30.0
    #: The services' stop budget (`<SERVICE>_STOP_TIMEOUT_S`) and the margin on top of it
    #: within which a SIGTERMed process must be gone.
    stop_timeout_s: float = 15.0
    stop_margin_s: float = 5.0
    #: The longest wait, after the load, for every renewal to end. It covers billing's approval
    #: expiry in the run (60 s: a PayPal approval the buyer cancels ends only then, as PayPal
    #: says nothing of a cancel) plus the backlog the last crashes leave; it ends early once
    #: every renewal has ended.
    drain_s: float = 300.0
    #: Seeds the choice of services, tokens and pauses; a run is repeated with its seed.
    seed: int = field(default_factory=lambda: random.randrange(1_000_000))
    #: Where runs keep their workdir (logs, data) and the latest report.
    out_dir: Path = ROOT / "var/chaos"

    @property
    def stop_bound_s(self) -> float:
        """How long a SIGTERMed service may take to exit."""
        return self.stop_timeout_s + self.stop_margin_s

    @classmethod
    def from_env(cls) -> "ChaosConfig":
        """Read `CHAOS_*`; raises `ConfigError` naming a bad variable."""
        base = cls()
        db = os.environ.get("CHAOS_DB", "").strip().lower() or base.db
        if db not in DATABASE_MODES:
            raise ConfigError(f"CHAOS_DB={db!r}: expected one of {', '.join(DATABASE_MODES)}")
        replicas = int(_number("CHAOS_REPLICAS", base.replicas, low=1, high=4))
        if replicas > 1 and db != "postgres":
            raise ConfigError(
                f"CHAOS_REPLICAS={replicas}: replicas of a service share its database, which "
                "needs CHAOS_DB=postgres (make chaos DB=postgres REPLICAS=2)"
            )
        cards = int(_number("CHAOS_CARDS", base.cards, low=4, high=240))
        failing = int(_number("CHAOS_FAILING_CARDS", base.failing_cards, low=0, high=cards))
        flaky = int(_number("CHAOS_FLAKY_CARDS", base.flaky_cards, low=0, high=cards - failing))
        every_min = _number("CHAOS_EVERY_MIN_S", base.every_min_s, low=1, high=3600)
        every_max = _number("CHAOS_EVERY_MAX_S", base.every_max_s, low=every_min, high=3600)
        seed = os.environ.get("CHAOS_SEED", "").strip()
        out_dir = os.environ.get("CHAOS_OUT_DIR", "").strip()
        return cls(
            seconds=_number("CHAOS_SECONDS", base.seconds, low=10, high=24 * 3600),
            rate=_number("CHAOS_RATE", base.rate, low=0.5, high=500),
            cards=cards,
            failing_cards=failing,
            flaky_cards=flaky,
            db=db,
            replicas=replicas,
            every_min_s=every_min,
            every_max_s=every_max,
            stop_timeout_s=_number("CHAOS_STOP_TIMEOUT_S", base.stop_timeout_s, low=1, high=600),
            stop_margin_s=_number("CHAOS_STOP_MARGIN_S", base.stop_margin_s, low=0, high=600),
            drain_s=_number("CHAOS_DRAIN_S", base.drain_s, low=10, high=24 * 3600),
            seed=int(_number("CHAOS_SEED", 0, low=0, high=2**31)) if seed else base.seed,
            out_dir=Path(out_dir) if out_dir else base.out_dir,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly."""
        values = asdict(self)
        values["out_dir"] = str(self.out_dir)
        values["stop_bound_s"] = self.stop_bound_s
        return values
