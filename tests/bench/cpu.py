"""CPU per event of the accounts saga's consumer path, in process, without Kafka.

`python -m tests.bench.cpu [--renewals N] [--batch B] [--profile FILE]`: N renewals' three events
(RenewalRequested, PaymentSettled, ProfileActivated) go through accounts' `EventConsumer`
(decode, inbox, saga handlers, outbox rows, commit) in batches of B per partition, on a SQLite
file; it prints CPU milliseconds per event of each kind. Process CPU time, not wall time, so a
busy machine moves it little; use it to compare changes to the consumer path, then confirm with
`make bench`. `--gap-s S` sleeps S seconds before each batch: what an event costs a process that
sat idle (on this project's 2-core VMs, one event at a time: 1.9 ms back to back, 3.8 ms after
10 ms idle, 8.7 ms after 1 s).
"""

import argparse
import asyncio
import cProfile
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from accounts.bootstrap import build
from accounts.catalogue.plans import seed_catalogue
from accounts.settings import AccountsSettings
from accounts.store import Card, User
from esim_core.messaging.consumer import MessageInfo
from esim_core.persistence.migrations import upgrade_to_head
from esim_schemas import (
    Money,
    PaymentDetails,
    PaymentSettled,
    PlanRef,
    ProfileActivated,
    RenewalRequested,
)
from esim_schemas.envelope import new_event

from tests.bench.stack import _make_cards

PLAN = PlanRef(code="JP-30D-10GB", data_mb=10240, validity_days=30)


async def run(
    renewals: int, batch: int, profile: str | None, gap_s: float = 0.0
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = AccountsSettings(
            database_url=f"sqlite+aiosqlite:///{tmp}/accounts.sqlite", http_port=1
        )
        accounts = build(settings)
        runtime = accounts.runtime
        assert runtime.migrations is not None
        await upgrade_to_head(settings.database_url, runtime.migrations)
        await seed_catalogue(runtime.database)
        consumer = runtime.subscribe()
        assert consumer is not None
        cards = list(_make_cards().iccids(renewals))
        users = [str(uuid.uuid4()) for _ in range(renewals)]
        async with runtime.database.session() as session:
            for n, user in enumerate(users):
                session.add(User(id=user, email=f"u{n}@example.com", password_hash="x"))
                session.add(Card(iccid=cards[n], activation_code="c", user_id=user))
        ids = [uuid.uuid4() for _ in range(renewals)]
        now = datetime.now(UTC)
        kinds: dict[str, list[bytes]] = {
            "renewal.requested": [],
            "payment.settled": [],
            "profile.activated": [],
        }
        for n, (user, rid) in enumerate(zip(users, ids, strict=True)):
            source = "/bench"
            kinds["renewal.requested"].append(
                new_event(
                    RenewalRequested(
                        renewal_id=rid,
                        user_id=user,
                        iccid=cards[n],
                        plan_code=PLAN.code,
                        payment=PaymentDetails(method="card", token="card_ok"),
                        start="now",
                        requested_at=now,
                        locale="en",
                    ),
                    source=source,
                ).to_json()
            )
            kinds["payment.settled"].append(
                new_event(
                    PaymentSettled(
                        renewal_id=rid,
                        payment_id=f"pay_{n}",
                        iccid=cards[n],
                        plan=PLAN,
                        price=Money(amount=990, currency="USD"),
                        method="card",
                        provider_reference=f"ch_{n}",
                        attempts=1,
                        settled_at=now,
                        start="now",
                    ),
                    source=source,
                ).to_json()
            )
            kinds["profile.activated"].append(
                new_event(
                    ProfileActivated(
                        renewal_id=rid,
                        iccid=cards[n],
                        plan_code=PLAN.code,
                        data_mb=10240,
                        valid_from=now,
                        valid_until=now + timedelta(days=30),
                        bundle_state="active",
                        platform_reference=f"b_{n}",
                        activated_at=now,
                    ),
                    source=source,
                ).to_json()
            )
        results: dict[str, float] = {}
        profiler = cProfile.Profile() if profile else None
        for kind, bodies in kinds.items():
            topic = f"esim.{kind}"
            offset = 0
            spent = 0.0
            if profiler:
                profiler.enable()
            for start in range(0, len(bodies), batch):
                chunk = bodies[start : start + batch]
                messages: Sequence[tuple[bytes, MessageInfo]] = [
                    (body, MessageInfo(topic=topic, partition=0, offset=offset + i, key=None))
                    for i, body in enumerate(chunk)
                ]
                offset += len(chunk)
                if gap_s:
                    await asyncio.sleep(gap_s)
                began = time.process_time()
                await consumer.handle_batch(messages)
                spent += time.process_time() - began
            if profiler:
                profiler.disable()
            results[kind] = spent * 1000 / len(bodies)
        if profiler and profile:
            profiler.dump_stats(profile)
        await runtime.database.close()
        return results


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renewals", type=int, default=500)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--profile")
    parser.add_argument(
        "--gap-s",
        type=float,
        default=0.0,
        help="sleep this long before each batch, as a service between events at 1/s does,"
        " and count only the batches' CPU: what a batch costs after the process sat idle",
    )
    args = parser.parse_args(argv)
    results = asyncio.run(run(args.renewals, args.batch, args.profile, args.gap_s))
    if args.gap_s:
        print(f"each batch of {args.batch} after {args.gap_s:g} s idle:")
    for kind, ms in results.items():
        print(f"{kind:20} {ms:6.3f} ms CPU per event")
    print(f"{'renewal':20} {sum(results.values()):6.3f} ms CPU (accounts consumer path)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
