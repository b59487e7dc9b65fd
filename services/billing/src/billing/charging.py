"""The payment loop: claim due payments and take each one step at its provider.

A round makes the one call the payment's state calls for, outside any transaction (pay a
pending payment; ask where a payment waiting for the buyer stands at its expiry, and close it
if the buyer never answered; capture an authorization once the plan is active, or release it
when activation failed; ask about a payment whose last answer was lost), then commits the
outcome, its event and the next due time in one transaction (`flow.PaymentFlow`).

Every call carries an idempotency key derived from the renewal, the same on every repeat. A
dunning charge after a recorded decline is a new attempt: at Stripe, which replays a key's
first answer (the decline too), it goes under its own key (`flow.attempt_key`), so it reaches
the card; a decline is an answer that arrived, so that new key cannot pay twice. A call that
got no answer (`GatewayUnavailableError`) leaves the payment `unknown`: the next rounds ask the
provider (`look_up`, under the key of the attempt whose answer was lost) on a schedule before
anything else, so a crash or a timeout never leads to a call under a new key, nor to a second
capture.
"""

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

from esim_core.clock import as_utc, utcnow
from esim_core.duework.worker import DueWorker, same_lease
from esim_core.messaging.outbox import Outbox
from esim_core.outside.retry import TryPolicy
from esim_core.persistence.db import Database
from esim_core.persistence.driver import Target

from billing import gateways
from billing.domain import (
    PaymentState,
    RetryRules,
    Step,
    capture_key,
    scrub,
    unavailable_delay,
    unknown_delay,
    void_key,
)
from billing.flow import PaymentFlow, amount_differs, attempt_key
from billing.store import (
    Payment,
    payment_by_id,
    snapshot,
    write_payment,
    write_payment_if_unchanged,
)

logger = logging.getLogger(__name__)

Failure = (
    gateways.PaymentDeclinedError | gateways.GatewayUnavailableError | gateways.GatewayRejectedError
)
Apply = Callable[[Target, Payment, datetime], Awaitable[None]]
T = TypeVar("T")


def lookup_request(payment: Payment) -> gateways.LookupRequest:
    """How to find a payment at its provider: the key and reference billing sent.

    The key is the current attempt's: the one whose answer, if lost, is the question.
    """
    return gateways.LookupRequest(
        method=payment.method,
        reference=payment.renewal_id,
        idempotency_key=attempt_key(payment),
        provider_reference=payment.provider_reference,
        amount=payment.amount,
        currency=payment.currency,
    )


class ChargeWorker(DueWorker[gateways.PaymentGateway, RetryRules]):
    """Takes each due payment one step: pay, ask, capture, release, or close."""

    table = Payment
    what = "charging payment"
    claims_rows = True  # a round starts from the row its claim returned: no read of its own
    noun = "payment"
    kept_by = "the provider's idempotency key keeps one payment and one capture"
    transient = gateways.GatewayUnavailableError
    system = "payment gateway"
    #: Where a provider sends the buyer back when the payment names no page of its own.
    return_url: str | None = None

    def __init__(
        self,
        database: Database,
        outbox: Outbox,
        port: gateways.PaymentGateway,
        rules: RetryRules,
        tries: TryPolicy,
        *,
        batch: int = 20,
        lease_s: float = 60.0,
    ) -> None:
        super().__init__(database, outbox, port, rules, tries, batch=batch, lease_s=lease_s)
        self.flow = PaymentFlow(outbox, rules)

    async def charge(self, payment: Payment) -> None:
        """One round of a payment as its claim leased it."""
        state = payment.state
        if state == PaymentState.PENDING:
            await self._pay(payment)
        elif state == PaymentState.ACTION_REQUIRED:
            await self._ask_the_buyer(payment)
        elif state == PaymentState.AUTHORIZED and payment.release_requested_at is not None:
            await self._void(payment)
        elif (
            state == PaymentState.AUTHORIZED
            and payment.capture_requested_at is not None
            and payment.capture_overdue_at is None
        ):
            await self._capture(payment)
        elif state == PaymentState.UNKNOWN:
            await self._ask(payment)
        else:
            # Final, or waiting for an event: a stale due time must not call the provider.
            await self.clear(payment)

    work_claimed = charge

    # The steps.

    async def _pay(self, payment: Payment) -> None:
        request = gateways.PaymentRequest(
            idempotency_key=attempt_key(payment),
            reference=payment.renewal_id,
            amount=payment.amount,
            currency=payment.currency,
            method=payment.method,
            token=payment.token,
            return_url=payment.return_url or self.return_url,
            description=f"eSIM plan {payment.plan_code}",
        )
        token = payment.token
        outcome: object = await self._answer(f"pay {payment.id}", lambda: self.port.pay(request))

        async def apply(session: Target, row: Payment, now: datetime) -> None:
            if isinstance(outcome, gateways.Authorized | gateways.Captured):
                differs = amount_differs(row, outcome.amount, outcome.currency)
                if differs is not None:
                    self.flow.mismatch(row, differs, now)
                elif isinstance(outcome, gateways.Authorized):
                    self.flow.authorize(session, row, outcome, now)
                else:
                    await self.flow.settle(session, row, outcome, now)
            elif isinstance(outcome, gateways.ActionRequired):
                self.flow.wait_for_buyer(session, row, outcome, now)
            elif isinstance(outcome, gateways.PaymentDeclinedError):
                row.last_error = scrub(f"declined: {outcome}", token)
                self.flow.decline(session, row, outcome.code, outcome.retryable, now)
            elif isinstance(outcome, gateways.GatewayUnavailableError):
                self._lost(row, Step.PAY, outcome, token, now)
            elif isinstance(outcome, gateways.GatewayRejectedError):
                self._refused(session, row, outcome, token, now)

        await self._commit(payment, apply)

    async def _ask_the_buyer(self, payment: Payment) -> None:
        expires = payment.action_expires_at
        now = utcnow()
        if expires is not None and as_utc(expires) > now:
            # Woken early: the buyer's answer comes by webhook; ask only at the expiry.
            async def wait(session: Target, row: Payment, at: datetime) -> None:
                row.due_at = expires

            await self._commit(payment, wait, count=False)
            return
        view = await self._look_up(payment)
        if isinstance(view, gateways.PaymentView) and view.standing not in (
            gateways.Standing.ACTION_REQUIRED,
            gateways.Standing.NOT_FOUND,
        ):
            await self._apply_view(payment, view)
            return
        if isinstance(view, gateways.GatewayUnavailableError | gateways.GatewayRejectedError):
            error = view

            async def later(session: Target, row: Payment, now: datetime) -> None:
                row.last_error = scrub(f"look-up: {error}", None)
                row.unavailable_rounds += 1
                pause = unknown_delay(row.unavailable_rounds, self.rules.unknown_schedule_s)
                row.due_at = now + timedelta(seconds=pause)

            await self._commit(payment, later)
            return
        # The buyer never answered in time: close the payment, then it fails not_approved.
        await self._void(payment, step=Step.CLOSE)

    async def _capture(self, payment: Payment) -> None:
        reference = payment.provider_reference
        if reference is None:
            raise RuntimeError(f"payment {payment.id} is authorized without a provider reference")
        request = gateways.CaptureRequest(
            idempotency_key=capture_key(payment.renewal_id),
            reference=payment.renewal_id,
            provider_reference=reference,
            amount=payment.amount,
            currency=payment.currency,
            method=payment.method,
        )
        outcome: object = await self._answer(
            f"capture {payment.id}", lambda: self.port.capture(request)
        )

        async def apply(session: Target, row: Payment, now: datetime) -> None:
            if isinstance(outcome, gateways.Captured):
                differs = amount_differs(row, outcome.amount, outcome.currency)
                if differs is not None:
                    self.flow.mismatch(row, differs, now)
                else:
                    await self.flow.settle(session, row, outcome, now)
            elif isinstance(outcome, gateways.PaymentDeclinedError):
                row.last_error = scrub(f"capture declined: {outcome}", None)
                row.due_at = None
                self.flow.capture_overdue(row, f"the provider declined the capture: {outcome}", now)
            elif isinstance(
                outcome, gateways.GatewayUnavailableError | gateways.GatewayRejectedError
            ):
                # Refused or unanswered, the capture may have been made: ask before anything.
                self._lost(row, Step.CAPTURE, outcome, None, now)

        await self._commit(payment, apply)

    async def _void(self, payment: Payment, step: Step = Step.VOID) -> None:
        request = gateways.VoidRequest(
            idempotency_key=void_key(payment.renewal_id),
            reference=payment.renewal_id,
            provider_reference=payment.provider_reference or "",
            method=payment.method,
        )
        try:
            outcome: object = await self.within_round(
                f"{step} {payment.id}", lambda: self.port.void(request)
            )
        except (gateways.GatewayUnavailableError, gateways.GatewayRejectedError) as error:
            outcome = error

        async def apply(session: Target, row: Payment, now: datetime) -> None:
            if isinstance(outcome, gateways.Voided):
                if step == Step.CLOSE:
                    self.flow.fail(session, row, "not_approved", now)
                else:
                    await self.flow.release(session, row, outcome.provider_reference, now)
            elif isinstance(
                outcome, gateways.GatewayUnavailableError | gateways.GatewayRejectedError
            ):
                # A refusal may mean the buyer paid at the last moment: ask what stands.
                self._lost(row, step, outcome, None, now)

        await self._commit(payment, apply)

    async def _ask(self, payment: Payment) -> None:
        view = await self._look_up(payment)
        if isinstance(view, gateways.GatewayRejectedError) and payment.unknown_step == Step.PAY:
            # A provider that finds a payment by its own id only (PayPal, before billing knows
            # the order): the question is the pay under the same key, which makes nothing new.
            await self._pay(payment)
            return
        if (
            isinstance(view, gateways.PaymentView)
            and view.standing == gateways.Standing.NOT_FOUND
            and payment.unknown_step == Step.PAY
            and payment.unavailable_rounds < self.rules.max_unavailable_rounds
        ):
            # The call never arrived: paying now under the same key is the same payment.
            await self._pay(payment)
            return
        if isinstance(view, gateways.PaymentView):
            await self._apply_view(payment, view)
            return
        error = view
        step = Step(payment.unknown_step or Step.PAY)

        async def apply(session: Target, row: Payment, now: datetime) -> None:
            self._lost(row, step, error, None, now)

        await self._commit(payment, apply)

    # Helpers.

    async def _answer(self, what: str, call: Callable[[], Awaitable[T]]) -> T | Failure:
        """One pay or capture call within the round: its answer, or the error it ended in.

        Both calls keep a decline, an unavailable gateway and a refusal as the round's outcome,
        for the commit to apply.
        """
        try:
            return await self.within_round(what, call)
        except (
            gateways.PaymentDeclinedError,
            gateways.GatewayUnavailableError,
            gateways.GatewayRejectedError,
        ) as error:
            return error

    async def _look_up(
        self, payment: Payment
    ) -> gateways.PaymentView | gateways.GatewayUnavailableError | gateways.GatewayRejectedError:
        request = lookup_request(payment)
        try:
            return await self.within_round(
                f"look up {payment.id}", lambda: self.port.look_up(request)
            )
        except (gateways.GatewayUnavailableError, gateways.GatewayRejectedError) as error:
            return error

    async def _apply_view(self, payment: Payment, view: gateways.PaymentView) -> None:
        async def apply(session: Target, row: Payment, now: datetime) -> None:
            if not await self.flow.apply_view(session, row, view, now):
                # Nothing changed: ask again on the schedule rather than at once.
                if row.state == PaymentState.UNKNOWN:
                    self._lost(row, Step(row.unknown_step or Step.PAY), None, None, now)
                else:
                    row.due_at = None

        await self._commit(payment, apply)

    def _lost(
        self,
        row: Payment,
        step: Step,
        error: Exception | None,
        token: str | None,
        now: datetime,
    ) -> None:
        text = scrub(f"{type(error).__name__}: {error}", token) if error else "still unknown"
        pause = self.flow.unknown(row, step, text, now)
        logger.warning(
            "payment %s: the answer to %s is unknown (%s); asking the provider in %.1f s",
            row.id,
            step,
            text,
            pause,
        )

    def _refused(
        self,
        session: Target,
        row: Payment,
        error: gateways.GatewayRejectedError,
        token: str | None,
        now: datetime,
    ) -> None:
        text = scrub(f"{type(error).__name__}: {error}", token)
        # A refused request is not an outage but a fault on one side: worth an ERROR.
        delay = self.another_round(row, text, now, unavailable_delay)
        if delay is None:
            logger.error(
                "payment %s: refused %d rounds in a row (%s); failing it",
                row.id,
                row.unavailable_rounds,
                row.last_error,
            )
            self.flow.fail(session, row, "provider_unavailable", now)
            return
        logger.error(
            "payment %s: refused in round %d of %d (%s); next round in %.1f s",
            row.id,
            row.unavailable_rounds,
            self.rules.max_unavailable_rounds,
            row.last_error,
            delay,
        )

    async def _commit(self, payment: Payment, apply: Apply, *, count: bool = True) -> None:
        """Commit a round's outcome (`apply`), its event and the next due time, once.

        Usually nobody wrote the payment since its claim: the outcome is applied to the row as
        the claim returned it and written in one statement that checks exactly that (the
        lease and `updated_at`, `store.write_payment_if_unchanged`). Otherwise (a handler or a
        webhook wrote it during the call) that transaction is rolled back, and the outcome is
        applied to the row as it is now, locked: if it is still in the state the round started
        from and still carries the round's lease. A webhook may have moved the payment during
        the call; then its news is newer and the round's outcome is dropped.
        """
        state, step, lease = payment.state, payment.unknown_step, payment.lease_until

        async def locked(session: Target, row: Payment) -> None:
            now = utcnow()
            if count:
                # A round ran, whatever its outcome; its lease ends with this commit.
                row.attempts += 1
                row.updated_at = now
            row.lease_until = None
            await apply(session, row, now)

        claimed = snapshot(payment)
        try:
            async with self.database.transaction() as transaction:
                await locked(transaction, payment)
                if not await write_payment_if_unchanged(transaction, payment, claimed):
                    raise _WrittenMeanwhile
            self.flow.known.remember(payment)
            return
        except _WrittenMeanwhile:
            pass
        async with self.database.transaction() as transaction:
            current = await payment_by_id(transaction, payment.id, lock=True)
            if current is None or current.state != state or current.unknown_step != step:
                return
            if not same_lease(current.lease_until, lease):
                logger.warning(
                    "payment %s was claimed again during its round; this round's outcome is "
                    "dropped (%s)",
                    payment.id,
                    self.kept_by,
                )
                return
            before = snapshot(current)
            await locked(transaction, current)
            await write_payment(transaction, current, before)
        self.flow.known.remember(current)


class _WrittenMeanwhile(Exception):
    """The payment was written since its claim: the round's first commit is rolled back."""
