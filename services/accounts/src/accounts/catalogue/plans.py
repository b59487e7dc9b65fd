"""The plan catalogue seeded into a new database: daily, monthly and quarterly plans."""

from typing import Any

from esim_core.persistence.db import Database
from sqlmodel import select

from accounts.store import Plan

ASIA = ["JP", "KR", "SG", "TH", "HK", "TW", "MY", "CN"]
EUROPE = ["FR", "DE", "IT", "ES", "NL", "BE", "AT", "PT", "CH", "GB"]

PLANS: list[dict[str, Any]] = [
    {
        "code": "JP-1D-1GB",
        "name": "Japan 1 GB / 1 day",
        "kind": "daily",
        "data_mb": 1024,
        "validity_days": 1,
        "countries": ["JP"],
        "prices": {"CNY": 1500, "USD": 250},
    },
    {
        "code": "JP-30D-10GB",
        "name": "Japan 10 GB / 30 days",
        "kind": "monthly",
        "data_mb": 10240,
        "validity_days": 30,
        "countries": ["JP"],
        "prices": {"CNY": 9900, "USD": 1400},
    },
    {
        "code": "JP-90D-30GB",
        "name": "Japan 30 GB / 90 days",
        "kind": "quarterly",
        "data_mb": 30720,
        "validity_days": 90,
        "countries": ["JP"],
        "prices": {"CNY": 24900, "USD": 3500},
    },
    {
        "code": "CN-1D-1GB",
        "name": "China 1 GB / 1 day",
        "kind": "daily",
        "data_mb": 1024,
        "validity_days": 1,
        "countries": ["CN"],
        "prices": {"CNY": 1200, "USD": 200},
    },
    {
        "code": "CN-30D-20GB",
        "name": "China 20 GB / 30 days",
        "kind": "monthly",
        "data_mb": 20480,
        "validity_days": 30,
        "countries": ["CN"],
        "prices": {"CNY": 8800, "USD": 1300},
    },
    {
        "code": "US-30D-10GB",
        "name": "USA 10 GB / 30 days",
        "kind": "monthly",
        "data_mb": 10240,
        "validity_days": 30,
        "countries": ["US"],
        "prices": {"CNY": 12900, "USD": 1800},
    },
    {
        "code": "ASIA-30D-15GB",
        "name": "Asia 15 GB / 30 days",
        "kind": "monthly",
        "data_mb": 15360,
        "validity_days": 30,
        "countries": ASIA,
        "prices": {"CNY": 15900, "USD": 2200},
    },
    {
        "code": "EU-1D-2GB",
        "name": "Europe 2 GB / 1 day",
        "kind": "daily",
        "data_mb": 2048,
        "validity_days": 1,
        "countries": EUROPE,
        "prices": {"CNY": 2500, "USD": 350},
    },
    {
        "code": "EU-30D-20GB",
        "name": "Europe 20 GB / 30 days",
        "kind": "monthly",
        "data_mb": 20480,
        "validity_days": 30,
        "countries": EUROPE,
        "prices": {"CNY": 16900, "USD": 2400},
    },
    {
        "code": "EU-90D-50GB",
        "name": "Europe 50 GB / 90 days",
        "kind": "quarterly",
        "data_mb": 51200,
        "validity_days": 90,
        "countries": EUROPE,
        "prices": {"CNY": 39900, "USD": 5500},
    },
    {
        "code": "RU-30D-10GB",
        "name": "Russia 10 GB / 30 days (withdrawn)",
        "kind": "monthly",
        "data_mb": 10240,
        "validity_days": 30,
        "countries": ["RU"],
        "prices": {"CNY": 9900, "USD": 1400},
        "available": False,
    },
]


async def seed_catalogue(database: Database) -> None:
    """Add the catalogue's plans that the database does not have yet."""
    async with database.session() as session:
        known = set((await session.exec(select(Plan.code))).all())
        for plan in PLANS:
            if plan["code"] not in known:
                session.add(Plan(**plan))
