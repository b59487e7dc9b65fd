"""Before buying: the home page, whether a phone supports eSIM, and the current offers."""

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from web.accounts import AccountsUnavailableError, ApiProblemError
from web.i18n import current_locale
from web.pages.common import anonymous, see_other, session_of
from web.render import render

router = APIRouter()

#: The seller's list of phones; edit it (and restart) to add models.
PHONES = Path(__file__).resolve().parent.parent / "data" / "phones.toml"


@dataclass(frozen=True)
class Brand:
    """A phone maker: its eSIM models and where its settings show eSIM support."""

    name: str
    models: tuple[str, ...]
    how_to_check: dict[str, str]
    notes: dict[str, str]


@cache
def brands(path: Path = PHONES) -> tuple[Brand, ...]:
    """The brands of the phones file, in its order."""
    with path.open("rb") as file:
        data = tomllib.load(file)
    return tuple(
        Brand(
            name=str(entry["name"]),
            models=tuple(str(model) for model in entry["models"]),
            how_to_check=dict(entry.get("how_to_check", {})),
            notes=dict(entry.get("notes", {})),
        )
        for entry in data["brand"]
    )


def search(query: str, brand: str = "") -> list[tuple[Brand, list[str]]]:
    """The brands and models matching every word of `query` (brand or model), case aside."""
    words = query.lower().split()
    found: list[tuple[Brand, list[str]]] = []
    for entry in brands():
        if brand and entry.name != brand:
            continue
        models = [
            model
            for model in entry.models
            if all(word in f"{entry.name} {model}".lower() for word in words)
        ]
        if models:
            found.append((entry, models))
    return found


@router.get("/")
async def home(request: Request) -> Response:
    """Signed in: the cards; else what the site does and where to begin."""
    if session_of(request).signed_in:
        return see_other("/cards")
    return render(request, "home.html")


@router.get("/phones")
async def phones_page(request: Request) -> Response:
    """Is my phone eSIM-capable? A searchable list by brand and model, and how to check."""
    query = request.query_params.get("q", "")[:80]
    brand = request.query_params.get("brand", "")[:40]
    return render(
        request,
        "phones.html",
        query=query,
        brand=brand,
        brands=[entry.name for entry in brands()],
        found=search(query, brand),
        lang=current_locale(),
    )


def _discount(promotion: dict[str, Any]) -> dict[str, Any]:
    """A promotion's discount as {percent} or {amount, currency}, whichever shape it came in."""
    given = promotion.get("discount")
    source = given if isinstance(given, dict) else promotion
    percent = source.get("percent_off", source.get("percent"))
    if percent is not None:
        return {"percent": percent}
    amount = source.get("amount_off", source.get("amount"))
    if isinstance(amount, dict) and amount.get("currency"):
        return {"money": amount}  # accounts' shape: `amount_off` is {amount, currency}
    if amount is not None and source.get("currency"):
        return {"money": {"amount": amount, "currency": source["currency"]}}
    return {}


@router.get("/offers")
async def offers_page(request: Request) -> Response:
    """The current public promotions (none where accounts does not list them)."""
    offers: list[dict[str, Any]] = []
    unavailable = False
    try:
        answer = await anonymous(request, "GET", "/v1/promotions")
        items = answer.get("items", []) if isinstance(answer, dict) else answer
        for item in items or []:
            offers.append(
                {
                    "code": item.get("code", ""),
                    "discount": _discount(item),
                    "starts": item.get("valid_from") or item.get("starts_at"),
                    "ends": item.get("valid_until") or item.get("ends_at"),
                    "description": item.get("description"),
                    "per_user_limit": item.get("per_user_limit"),
                }
            )
    except ApiProblemError as problem:
        # 404: an accounts without the promotions list; there is simply nothing to show.
        unavailable = problem.status != 404
    except AccountsUnavailableError:
        unavailable = True
    return render(request, "offers.html", offers=offers, unavailable=unavailable)
