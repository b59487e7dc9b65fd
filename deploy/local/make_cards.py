#!/usr/bin/env python3
"""Writes the demo eSIM cards of the local run to deploy/local/cards.csv (stdlib only).

Each card is a UK-range ICCID and its activation code:

* ICCID: 19 digits, ``89`` (telecom) ``44`` (UK) ``500`` (demo issuer), an 11-digit serial
  and a Luhn check digit computed over the first 18 digits;
* activation code: ``LPA:1$smdp.sandbox.esim.local$<matching id>``, the matching id being the
  first 32 hex digits, upper case, of SHA-256 over the ICCID, so the file is reproducible.

The first card is the ICCID used as the example in CONTRACT.md. Run it again to regenerate
the committed file: ``python3 deploy/local/make_cards.py [--count N] [--output PATH]``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
from collections.abc import Iterator
from pathlib import Path

PREFIX = "8944500"
SMDP_ADDRESS = "smdp.sandbox.esim.local"
CONTRACT_EXAMPLE_ICCID = "8944500102198304826"
DEFAULT_COUNT = 250
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "cards.csv"


def luhn_check_digit(payload: str) -> str:
    """The digit that, appended to ``payload``, makes the Luhn sum divisible by 10."""
    total = 0
    for position, char in enumerate(reversed(payload)):
        digit = int(char)
        if position % 2 == 0:  # these are doubled once the check digit is appended
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    """Whether the last digit of ``number`` is the Luhn check digit of the others."""
    return number.isdigit() and luhn_check_digit(number[:-1]) == number[-1]


def activation_code(iccid: str) -> str:
    """The deterministic LPA activation code of a demo card."""
    matching_id = hashlib.sha256(iccid.encode("ascii")).hexdigest()[:32].upper()
    return f"LPA:1${SMDP_ADDRESS}${matching_id}"


def iccids(count: int) -> Iterator[str]:
    """``count`` distinct demo ICCIDs, the contract's example first, then serials 1, 2, ..."""
    yield CONTRACT_EXAMPLE_ICCID
    serial = 1
    produced = 1
    while produced < count:
        payload = f"{PREFIX}1{serial:010d}"  # 7 + 1 + 10 = 18 digits
        iccid = payload + luhn_check_digit(payload)
        serial += 1
        if iccid == CONTRACT_EXAMPLE_ICCID:
            continue
        produced += 1
        yield iccid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="number of cards")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="CSV file to write")
    args = parser.parse_args()
    if args.count < 1:
        parser.error("--count must be at least 1")

    rows = [(iccid, activation_code(iccid)) for iccid in iccids(args.count)]
    for iccid, _ in rows:
        if len(iccid) != 19 or not iccid.startswith(PREFIX) or not luhn_valid(iccid):
            raise SystemExit(f"generated an invalid ICCID {iccid}")

    with args.output.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("iccid", "activation_code"))
        writer.writerows(rows)
    print(f"wrote {len(rows)} cards to {args.output}")


if __name__ == "__main__":
    main()
