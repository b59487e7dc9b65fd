"""A service's settings refuse a longest pause set below the first pause it caps."""

import pytest
from esim_core.settings import ServiceSettings, SettingsError, load_settings
from pydantic import Field
from pydantic_settings import SettingsConfigDict


class _PausingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PAUSING_", extra="ignore", frozen=True)
    caps = {"backoff_max_s": "backoff_s"}

    database_url: str = "sqlite+aiosqlite:///:memory:"
    http_port: int = 8099
    backoff_s: float = Field(1.0, gt=0)
    backoff_max_s: float = Field(10.0, gt=0, validate_default=True)


def test_a_cap_below_its_base_is_refused_naming_the_base(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAUSING_BACKOFF_MAX_S", "0.5")
    with pytest.raises(SettingsError) as raised:
        load_settings(_PausingSettings)
    assert "PAUSING_BACKOFF_MAX_S: Value error, must not be below PAUSING_BACKOFF_S (1)" in str(
        raised.value
    )


def test_a_base_set_above_the_caps_default_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAUSING_BACKOFF_S", "60")
    with pytest.raises(SettingsError, match=r"PAUSING_BACKOFF_MAX_S: .*below PAUSING_BACKOFF_S"):
        load_settings(_PausingSettings)


def test_a_cap_at_or_above_its_base_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAUSING_BACKOFF_S", "10")
    settings = load_settings(_PausingSettings)
    assert (settings.backoff_s, settings.backoff_max_s) == (10.0, 10.0)


@pytest.mark.parametrize(
    "caps",
    [{"backoff_max_s": "backof_s"}, {"backof_max_s": "backoff_s"}, {"backoff_s": "backoff_max_s"}],
)
def test_a_caps_entry_that_would_check_nothing_stops_the_class(caps: dict[str, str]) -> None:
    with pytest.raises(TypeError, match="must be a setting after"):
        type("Broken", (_PausingSettings,), {"caps": caps, "__module__": __name__})
