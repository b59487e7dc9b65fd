"""The card inventory: a CSV of iccid,activation_code, imported at start."""

import csv
import logging
from pathlib import Path

from esim_core.persistence.db import Database
from esim_schemas import luhn_valid
from sqlmodel import select

from accounts.store import Card

logger = logging.getLogger(__name__)


class InventoryFileError(ValueError):
    """The card inventory file is malformed; the message names the line and the fault."""


def read_cards(path: Path) -> list[tuple[str, str]]:
    """Read and check an inventory CSV with the header `iccid,activation_code`.

    Raises:
        InventoryFileError: a missing header, a malformed ICCID, or a repeated one.
    """
    cards: list[tuple[str, str]] = []
    seen: set[str] = set()
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or {"iccid", "activation_code"} - set(reader.fieldnames):
            raise InventoryFileError(f"{path}: the header must be 'iccid,activation_code'")
        for line, row in enumerate(reader, start=2):
            iccid = (row.get("iccid") or "").strip()
            code = (row.get("activation_code") or "").strip()
            if not (iccid.isdigit() and len(iccid) in (19, 20) and luhn_valid(iccid)):
                raise InventoryFileError(f"{path}:{line}: {iccid!r} is not a valid ICCID")
            if not code:
                raise InventoryFileError(f"{path}:{line}: the activation code is empty")
            if iccid in seen:
                raise InventoryFileError(f"{path}:{line}: ICCID {iccid} appears twice")
            seen.add(iccid)
            cards.append((iccid, code))
    return cards


async def import_cards(database: Database, path: Path) -> int:
    """Add inventory cards that are not known yet; known cards (and their owners) are kept."""
    cards = read_cards(path)
    async with database.session() as session:
        known = set((await session.exec(select(Card.iccid))).all())
        added = 0
        for iccid, code in cards:
            if iccid not in known:
                session.add(Card(iccid=iccid, activation_code=code))
                added += 1
    logger.info("card inventory %s: %d cards, %d new", path, len(cards), added)
    return added
