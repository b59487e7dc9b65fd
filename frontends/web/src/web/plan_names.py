"""Plan names in the travellers' languages: the seller's list over the catalogue's English names.

The accounts catalogue names each plan once, in English. `data/plan_names.toml` gives a plan's
name per locale (`["zh-CN"]`, then `"<plan code>" = "<name>"`); a plan or locale missing there
keeps the catalogue's name, so a new plan shows at once and gets its translation later.
"""

import tomllib
from functools import cache
from pathlib import Path
from typing import Any

from web.i18n import LANGUAGE_NAMES, current_locale

PLAN_NAMES = Path(__file__).resolve().parent / "data" / "plan_names.toml"


class PlanNamesError(ValueError):
    """The plan names file cannot be used as it is (it says where)."""


def read_names(path: Path) -> dict[str, dict[str, str]]:
    """The names in `path`, by locale then plan code, checked.

    Raises:
        PlanNamesError: the file is not TOML, names a locale the site does not speak, or gives
            a name that is not a non-empty string.
    """
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except tomllib.TOMLDecodeError as error:
        raise PlanNamesError(f"{path}: not valid TOML: {error}") from error
    names: dict[str, dict[str, str]] = {}
    for locale, table in data.items():
        if locale not in LANGUAGE_NAMES:
            spoken = ", ".join(LANGUAGE_NAMES)
            raise PlanNamesError(f"{path}: [{locale}] is not a language of the site ({spoken})")
        if not isinstance(table, dict):
            raise PlanNamesError(f"{path}: [{locale}] must be a table of plan code = name")
        for code, name in table.items():
            if not isinstance(name, str) or not name.strip():
                raise PlanNamesError(f"{path}: [{locale}] {code} must be a non-empty name")
        names[locale] = {code: name.strip() for code, name in table.items()}
    return names


@cache
def plan_names() -> dict[str, dict[str, str]]:
    """The seller's file, read once (the app reads it at start, so a broken one stops it)."""
    return read_names(PLAN_NAMES)


def localized(plan: dict[str, Any]) -> dict[str, Any]:
    """`plan` (as the catalogue gives it) with its name in the current language, where known."""
    name = plan_names().get(current_locale(), {}).get(str(plan.get("code")))
    return {**plan, "name": name} if name else plan
