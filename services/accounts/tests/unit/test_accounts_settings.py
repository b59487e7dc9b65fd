"""Settings: production refuses the local run's secrets, promotions and demo cards by name."""

from pathlib import Path

import pytest
from accounts.settings import AccountsSettings
from esim_core.production import LocalDefaultsError, refuse_local_defaults


def live_accounts(**changes: object) -> AccountsSettings:
    """Accounts' settings as production has them, none a local run's value, with `changes`."""
    values: dict[str, object] = {
        "kafka_bootstrap_servers": "kafka.internal:9092",
        "redis_url": "redis://redis.internal:6379/0",
        "database_url": "postgresql+asyncpg://accounts:pw@db.internal:5432/accounts",
        "jwt_secret": "Jq8Zr2Lx7Vm3Pt9KaWn4Yb6Hd1Fs5Gc0",
        "RESET_CODE_KEY": "Xq3v9L2mT7wR8pZ1kB4nC6yH0sD5fG2j",
        "seed_promotions": False,
        "cards_csv": Path("/etc/esim/inventory/cards.csv"),
        **changes,
    }
    return AccountsSettings.model_validate(values)


@pytest.fixture(autouse=True)
def production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ESIM_ENV", raising=False)


def test_production_settings_without_local_values_pass() -> None:
    refuse_local_defaults(live_accounts())


def test_production_refuses_the_local_runs_values_by_name() -> None:
    defaults = AccountsSettings()
    settings = live_accounts(
        jwt_secret=defaults.jwt_secret.get_secret_value(),
        RESET_CODE_KEY=defaults.reset_code_key.get_secret_value(),
        seed_promotions=defaults.seed_promotions,
        cards_csv=defaults.cards_csv,
    )

    with pytest.raises(LocalDefaultsError) as caught:
        refuse_local_defaults(settings)

    message = str(caught.value)
    for setting in (
        "ACCOUNTS_JWT_SECRET: is a demo or placeholder value",
        "RESET_CODE_KEY: is a demo or placeholder value",
        "ACCOUNTS_SEED_PROMOTIONS: would add the local run's promotions (WELCOME10)",
        "ACCOUNTS_CARDS_CSV: imports the demo cards",
    ):
        assert setting in message
    assert "local-development-only" not in message


def test_the_demo_cards_mounted_elsewhere_are_still_the_demo_cards() -> None:
    # compose mounts the repository's file at /app/deploy/local/cards.csv
    settings = live_accounts(cards_csv=Path("/app/deploy/local/cards.csv"))

    with pytest.raises(LocalDefaultsError, match="ACCOUNTS_CARDS_CSV"):
        refuse_local_defaults(settings)


def test_a_local_run_keeps_its_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESIM_ENV", "local")

    refuse_local_defaults(AccountsSettings())
