"""Sealed secrets open only with the same key and context, and not at all once altered."""

import pytest
from esim_core.sealing import ResetCodeKeySettings, Sealer, SealError
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

KEY = "k" * 32


def test_a_sealed_secret_opens_with_the_same_key_and_context() -> None:
    sealed = Sealer(KEY).seal("482913", "user-1")
    assert "482913" not in sealed
    assert Sealer(KEY).open(sealed, "user-1") == "482913"
    assert Sealer(KEY).seal("482913", "user-1") != sealed  # a fresh nonce each time


@pytest.mark.parametrize(
    ("key", "context"), [("another key of at least 32 chars!", "user-1"), (KEY, "user-2")]
)
def test_another_key_or_context_cannot_open_it(key: str, context: str) -> None:
    sealed = Sealer(KEY).seal("482913", "user-1")
    with pytest.raises(SealError):
        Sealer(key).open(sealed, context)


def _flip(sealed: str) -> str:
    """One character of the ciphertext changed."""
    return sealed[:10] + ("A" if sealed[10] != "A" else "B") + sealed[11:]


@pytest.mark.parametrize("mangle", [_flip, lambda s: "v2" + s[2:], lambda s: "x"])
def test_an_altered_value_is_refused(mangle: object) -> None:
    sealed = Sealer(KEY).seal("482913", "user-1")
    with pytest.raises(SealError):
        Sealer(KEY).open(mangle(sealed), "user-1")  # type: ignore[operator]


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="32 characters"):
        Sealer("short")


def test_the_reset_code_key_is_read_unprefixed_and_refused_when_short(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Accounts(ResetCodeKeySettings):
        model_config = SettingsConfigDict(env_prefix="ACCOUNTS_")

    monkeypatch.setenv("RESET_CODE_KEY", KEY)
    sealed = Accounts().reset_code_sealer().seal("123456", "user-1")
    assert Sealer(KEY).open(sealed, "user-1") == "123456"
    monkeypatch.setenv("RESET_CODE_KEY", "short")
    with pytest.raises(ValidationError, match="at least 32 characters"):
        Accounts()


def test_the_local_development_key_is_named_in_the_log(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("RESET_CODE_KEY", raising=False)
    ResetCodeKeySettings().reset_code_sealer()
    assert "RESET_CODE_KEY is not set" in caplog.text
