"""The payment sandbox's ledger: every authorization, capture, void and refund, by any API."""

import threading
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field

from sandboxes.timestamps import Clock, Timestamp, utc_now

Kind = Literal["authorizations", "captures", "voids", "refunds"]
Method = Literal["card", "paypal", "alipay"]


class Entry(BaseModel):
    """One movement of money (or of a hold on it) at a provider."""

    id: str
    reference: str = Field(description="the renewal id the merchant gave the payment")
    method: Method
    amount: int
    currency: str
    provider: str = Field(description="which API made it: stripe, paypal, alipay or generic")
    provider_reference: str | None = Field(
        default=None, description="the payment it belongs to (PaymentIntent, order, trade)"
    )
    charge_id: str | None = Field(
        default=None, description="for a refund or a void: the capture or authorization it undoes"
    )
    planted: bool = False
    created_at: Timestamp


class LedgerView(BaseModel):
    """`GET /sandbox/ledger`: everything, or one reference's movements."""

    authorizations: list[Entry]
    captures: list[Entry]
    voids: list[Entry]
    refunds: list[Entry]


class Plant(BaseModel):
    """`POST /sandbox/ledger/plant`: a capture billing never asked for (reconciliation tests)."""

    method: Method
    reference: str = Field(min_length=1, max_length=128)
    amount: int = Field(gt=0, strict=True)
    currency: str = Field(pattern=r"^[A-Z]{3}$")


@dataclass
class Ledger:
    """Thread-safe lists of entries by kind; each provider records into it as it acts."""

    clock: Clock = utc_now
    _entries: dict[str, list[Entry]] = field(
        default_factory=lambda: {k: [] for k in ("authorizations", "captures", "voids", "refunds")}
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(
        self,
        kind: Kind,
        *,
        id: str,
        reference: str,
        method: Method,
        amount: int,
        currency: str,
        provider: str,
        provider_reference: str | None = None,
        charge_id: str | None = None,
        planted: bool = False,
    ) -> Entry:
        """Add one entry and return it."""
        entry = Entry(
            id=id,
            reference=reference,
            method=method,
            amount=amount,
            currency=currency,
            provider=provider,
            provider_reference=provider_reference,
            charge_id=charge_id,
            planted=planted,
            created_at=self.clock(),
        )
        with self._lock:
            self._entries[kind].append(entry)
        return entry

    def entries(self, kind: Kind, reference: str | None = None) -> list[Entry]:
        """The entries of one kind, oldest first, optionally of one reference only."""
        with self._lock:
            return [e for e in self._entries[kind] if reference in (None, e.reference)]

    def view(self, reference: str | None = None) -> LedgerView:
        """Every kind's entries, optionally of one reference only."""
        return LedgerView(
            authorizations=self.entries("authorizations", reference),
            captures=self.entries("captures", reference),
            voids=self.entries("voids", reference),
            refunds=self.entries("refunds", reference),
        )

    def reset(self) -> None:
        """Forget every entry."""
        with self._lock:
            for entries in self._entries.values():
                entries.clear()
