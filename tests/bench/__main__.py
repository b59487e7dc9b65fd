"""`python -m tests.bench` (`make bench`): the platform's throughput against a bare relay baseline.

Options default from the environment the Makefile passes on: `DB` (sqlite|postgres),
`BENCH_STACK` (own|running), `BENCH_QUICK=1`, `PROFILE=1`.
"""

import argparse
import os
import sys
from dataclasses import replace

from tests.bench.run import Config, Progress, execute


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


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
    args = parser.parse_args(argv)
    config = Config(
        db=args.db,
        stack=args.stack,
        profile=args.profile,
        cards_per_user=args.cards_per_user,
        inventory=args.inventory,
        rate=args.rate,
        flat_rate=args.flat_rate,
        start=args.start,
        phases=tuple(p.strip() for p in args.phases.split(",") if p.strip()),
        history=None if args.no_history else defaults.history,
    )
    if args.quick:
        config = config.quick_version()
    overrides = {
        "cards": args.cards,
        "seconds": args.seconds,
        "http_seconds": args.http_seconds,
        "flat_seconds": args.flat_seconds,
        "drain_s": args.drain,
    }
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    config.specs()  # fail now on an unknown phase
    return config


def main() -> int:
    """Run the bench."""
    return execute(parse(sys.argv[1:]), Progress())


if __name__ == "__main__":
    sys.exit(main())
