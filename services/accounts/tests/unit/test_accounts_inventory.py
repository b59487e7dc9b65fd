"""The card inventory file: good rows are imported once, a bad file is refused with its line."""

from pathlib import Path

import pytest
from accounts.cards.inventory import InventoryFileError, import_cards, read_cards
from accounts.store import Card
from esim_core.persistence.db import Database
from sqlmodel import select

GOOD = "8944500102198304842"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cards.csv"
    path.write_text(text)
    return path


async def test_import_adds_new_cards_and_keeps_owners(tmp_path: Path, database: Database) -> None:
    path = write(tmp_path, f"iccid,activation_code\n{GOOD},LPA:1$x$Y\n")
    assert await import_cards(database, path) == 1
    assert await import_cards(database, path) == 0
    async with database.session() as session:
        codes = (await session.exec(select(Card.iccid))).all()
    assert GOOD in codes


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("iccid,code\n", "header"),
        ("iccid,activation_code\n8944500102198304841,LPA\n", ":2: '8944500102198304841'"),
        ("iccid,activation_code\n12345,LPA\n", "not a valid ICCID"),
        (f"iccid,activation_code\n{GOOD},\n", "activation code is empty"),
        (f"iccid,activation_code\n{GOOD},A\n{GOOD},B\n", ":3: ICCID"),
    ],
)
def test_a_bad_inventory_file_names_the_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InventoryFileError, match=message.replace("$", r"\$")):
        read_cards(write(tmp_path, text))


def test_the_demo_inventory_is_valid() -> None:
    cards = read_cards(Path(__file__).resolve().parents[4] / "deploy/local/cards.csv")
    assert len(cards) >= 200
