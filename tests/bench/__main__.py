"""`python -m tests.bench` (`make bench`): the platform's throughput against a bare relay baseline.

Options default from the environment the Makefile passes on: `DB` (sqlite|postgres),
`BENCH_STACK` (own|running), `BENCH_QUICK=1`, `PROFILE=1`, `SOAK_MINUTES` (the long run).
"""

import argparse
import os
import sys
from dataclasses import replace

from tests.bench.run import Config, Progress, execute


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _minutes(name: str) -> float | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        minutes = float(value)
    except ValueError:
        minutes = -1.0
    if not minutes > 0:
        raise SystemExit(f"{name}={value!r}: expected a number of minutes above 0, e.g. 30")
    return minutes


def _count(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or not 1 <= int(value) <= 4:
        raise SystemExit(f"{name}={value!r}: expected a whole number from 1 to 4")
    return int(value)


def parse(argv: list[str]) -> Config:
    """The run's configuration from the command line and the environment."""
    defaults = Config()
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description=(
            "Measure the platform's throughput and latency (renewal requested -> profile"
            " activated) against three bare consume-and-produce relays on the same broker."
        ),
    )
    parser.add_argument(
        "--db", choices=("sqlite", "postgres"), default=os.environ.get("DB") or "sqlite"
    )
    parser.add_argument(
        "--stack",
        choices=("own", "running"),
        default=os.environ.get("BENCH_STACK") or "own",
        help="start a stack on free ports (own), or use one at the local run's addresses",
    )
    parser.add_argument("--quick", action="store_true", default=_flag("BENCH_QUICK"))
    parser.add_argument("--profile", action="store_true", default=_flag("PROFILE"))
    parser.add_argument(
        "--trace",
        action="store_true",
        default=_flag("TRACE"),
        help="own stack: the services export their spans to the bench, which shows where each"
        " platform phase's renewals spent their time, step by step (TRACE; not in the history:"
        " recording spans costs CPU)",
    )
    parser.add_argument("--cards", type=int, help=f"cards to renew ({defaults.cards}; quick: 50)")
    parser.add_argument("--cards-per-user", type=int, default=defaults.cards_per_user)
    parser.add_argument(
        "--inventory",
        type=int,
        default=defaults.inventory,
        help="own stack: cards in the inventory (more than the 250 demo cards generates a CSV)",
    )
    parser.add_argument("--rate", type=float, default=defaults.rate, help="fixed rate, per second")
    parser.add_argument("--seconds", type=float, help=f"fixed-rate phase ({defaults.seconds} s)")
    parser.add_argument(
        "--http-seconds", type=float, help=f"HTTP phase ({defaults.http_seconds} s)"
    )
    parser.add_argument("--flat-rate", type=float, default=defaults.flat_rate)
    parser.add_argument(
        "--flat-seconds", type=float, help=f"flat-out phase ({defaults.flat_seconds} s)"
    )
    parser.add_argument("--drain", type=float, help=f"bound of each drain ({defaults.drain_s} s)")
    parser.add_argument("--start", choices=("now", "after_current"), default=defaults.start)
    parser.add_argument(
        "--phases", default=",".join(defaults.phases), help="comma-separated subset, in order"
    )
    parser.add_argument("--no-history", action="store_true", help="do not append to the history")
    parser.add_argument(
        "--soak-minutes",
        type=float,
        default=_minutes("SOAK_MINUTES"),
        help="run the long phase alone (unless --phases names others) for this many minutes"
        f" (SOAK_MINUTES; {defaults.soak_seconds / 60:g} in the soak phase's default)",
    )
    parser.add_argument("--soak-rate", type=float, default=defaults.soak_rate)
    parser.add_argument(
        "--replicas",
        type=int,
        default=_count("REPLICAS", defaults.replicas),
        help="own stack: processes of each service, sharing its database (PostgreSQL only;"
        " REPLICAS)",
    )
    args = parser.parse_args(argv)
    config = Config(
        db=args.db,
        stack=args.stack,
        profile=args.profile,
        trace=args.trace,
        cards_per_user=args.cards_per_user,
        inventory=args.inventory,
        rate=args.rate,
        flat_rate=args.flat_rate,
        start=args.start,
        phases=tuple(p.strip() for p in args.phases.split(",") if p.strip())
        if args.soak_minutes is None or args.phases != ",".join(defaults.phases)
        else ("soak",),
        soak_rate=args.soak_rate,
        replicas=args.replicas,
        history=None if args.no_history or args.trace else defaults.history,
    )
    if args.quick:
        config = config.quick_version()
    overrides = {
        "cards": args.cards,
        "seconds": args.seconds,
        "http_seconds": args.http_seconds,
        "flat_seconds": args.flat_seconds,
        "drain_s": args.drain,
        "soak_seconds": args.soak_minutes * 60 if args.soak_minutes else None,
    }
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    config.specs()  # fail now on an unknown phase
    if config.trace and config.stack != "own":
        parser.error(
            "--trace (TRACE): the services must export their spans to the bench, which only its"
            " own stack's services are told to do (leave BENCH_STACK unset)"
        )
    if config.replicas > 1 and (config.db != "postgres" or config.stack != "own"):
        parser.error(
            f"--replicas {config.replicas} (REPLICAS): replicas of a service share its database,"
            " which needs the bench's own stack on PostgreSQL (make bench DB=postgres REPLICAS=2)"
        )
    return config


def main() -> int:
    """Run the bench."""
    return execute(parse(sys.argv[1:]), Progress())


if __name__ == "__main__":
    sys.exit(main())
