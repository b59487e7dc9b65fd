"""Every page renders, in English and in Simplified Chinese, with the language switch."""

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from web.plan_names import PLAN_NAMES, PlanNamesError, read_names
from web_fake_accounts import FakeAccounts
from web_testkit import EMAIL, PASSWORD, sign_in

ICCID = "8986012345678901234"
PUBLIC = [
    "/",
    "/signin",
    "/signup",
    "/password/forgot",
    "/password/reset",
    "/plans",
    "/phones",
    "/offers",
]
PRIVATE = [
    "/cards",
    f"/cards/{ICCID}",
    f"/cards/{ICCID}/renew",
    f"/cards/{ICCID}/history",
    "/profile",
]
#: A word each page's frame shows in each language (the switch's button).
SWITCH = {"en": "Change", "zh-CN": "切换"}
ACCEPT = {"en": "en-GB,en;q=0.9", "zh-CN": "zh-CN,zh;q=0.9,en;q=0.4"}


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
@pytest.mark.parametrize("path", PUBLIC)
def test_each_public_page_renders_in_the_browsers_language(
    client: TestClient, path: str, locale: str
) -> None:
    page = client.get(path, headers={"Accept-Language": ACCEPT[locale]})

    assert page.status_code == 200
    assert f'<html lang="{"zh-Hans-CN" if locale == "zh-CN" else "en"}">' in page.text
    assert f">{SWITCH[locale]}</button>" in page.text
    assert 'action="/locale"' in page.text


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
@pytest.mark.parametrize("path", PRIVATE)
def test_each_signed_in_page_renders_in_the_travellers_own_language(
    client: TestClient, fake: FakeAccounts, path: str, locale: str
) -> None:
    fake.add_user(EMAIL, PASSWORD, locale=locale)
    fake.add_card(EMAIL, ICCID)
    # The browser asks for the other language: the account's own wins once signed in.
    other = "zh-CN" if locale == "en" else "en"
    client.headers["Accept-Language"] = ACCEPT[other]
    sign_in(client, fake)

    page = client.get(path)

    assert page.status_code == 200, page.text
    assert f">{SWITCH[locale]}</button>" in page.text


def test_the_card_page_shows_data_left_when_it_was_measured_and_the_queued_plans(
    traveller: TestClient, fake: FakeAccounts
) -> None:
    fake.cards[ICCID]["queued"] = [
        {
            "renewal_id": "11111111-1111-1111-1111-111111111111",
            "plan_code": "ASIA-1D-1GB",
            "data_mb": 1024,
            "valid_from": "2026-12-20T00:00:00Z",
            "valid_until": "2026-12-21T00:00:00Z",
        }
    ]

    page = traveller.get(f"/cards/{ICCID}").text

    assert "3.5 GB of 10 GB" in page
    assert "Measured at" in page and "Dec 6, 2026 04:30 UTC" in page
    assert "Dec 20, 2026 00:00 UTC" in page
    assert "Asia day pass" in page
    assert "Cancelling cannot be undone" in page


def test_amounts_dates_and_data_are_written_the_chinese_way_in_chinese(
    client: TestClient, fake: FakeAccounts
) -> None:
    fake.add_user(EMAIL, PASSWORD, locale="zh-CN")
    fake.add_card(EMAIL, ICCID)
    sign_in(client, fake)

    page = client.get(f"/cards/{ICCID}").text

    assert "2026年12月6日" in page
    assert "¥139.00" in page
    assert "剩余流量" in page


def test_the_switch_changes_the_language_and_the_profiles_when_signed_in(
    traveller: TestClient, fake: FakeAccounts
) -> None:
    token = traveller.get("/cards").text.split('name="csrf_token" value="')[1].split('"')[0]

    answer = traveller.post(
        "/locale", data={"locale": "zh-CN", "next": "/plans", "csrf_token": token}
    )

    assert answer.status_code == 303 and answer.headers["location"] == "/plans"
    assert "<h1>套餐</h1>" in traveller.get("/plans").text
    assert fake.users[EMAIL]["locale"] == "zh-CN"


def test_the_switch_never_sends_the_traveller_to_another_site(client: TestClient) -> None:
    token = client.get("/").text.split('name="csrf_token" value="')[1].split('"')[0]

    answer = client.post(
        "/locale", data={"locale": "en", "next": "//evil.example/x", "csrf_token": token}
    )

    assert answer.headers["location"] == "/"


def test_plans_are_filtered_by_country_and_kind_and_priced_in_the_chosen_currency(
    client: TestClient,
) -> None:
    page = client.get("/plans", params={"country": "KR", "currency": "CNY"}).text

    assert "Asia day pass" in page and "CN¥35.00" in page
    assert "Japan 30 days" not in page
    assert "Japan 30 days" in client.get("/plans", params={"kind": "monthly"}).text


def test_the_phone_list_finds_models_by_brand_and_words_and_says_how_to_check(
    client: TestClient,
) -> None:
    page = client.get("/phones", params={"q": "pixel 8"}).text

    assert "Pixel 8 Pro" in page and "Network &amp; internet" in page
    assert "iPhone" not in page
    chinese = client.get(
        "/phones", params={"q": "iphone 15"}, headers={"Accept-Language": "zh-CN"}
    ).text
    assert "添加 eSIM" in chinese


def test_offers_list_the_public_promotions_and_none_when_accounts_has_no_list(
    client: TestClient, fake: FakeAccounts
) -> None:
    assert "There is no offer just now" in client.get("/offers").text

    fake.promotions = [
        {
            "code": "WELCOME10",
            "percent_off": 10,
            "amount_off": None,
            "valid_from": None,
            "valid_until": "2027-01-31T00:00:00Z",
            "per_user_limit": 1,
        },
        {"code": "TEN", "percent_off": None, "amount_off": {"amount": 1000, "currency": "CNY"}},
    ]
    page = client.get("/offers").text

    assert "WELCOME10" in page and "10% off" in page and "until Jan 31, 2027" in page
    assert "Once per traveller." in page
    assert "CN¥10.00 off" in page


def test_home_sends_a_signed_in_traveller_to_their_cards(traveller: TestClient) -> None:
    answer = traveller.get("/")

    assert answer.status_code == 303 and answer.headers["location"] == "/cards"


def test_an_unknown_page_is_a_page_not_a_json_body(client: TestClient) -> None:
    answer = client.get("/nowhere")

    assert answer.status_code == 404
    assert "There is no such page." in answer.text
    assert answer.headers["content-type"].startswith("text/html")


def test_a_renewal_address_that_is_no_renewal_id_is_a_missing_page(traveller: TestClient) -> None:
    answer = traveller.get("/renewals/not-a-uuid")

    assert answer.status_code == 404
    assert "There is no such page." in answer.text


def test_the_monthly_cap_is_shown_in_major_units(traveller: TestClient, fake: FakeAccounts) -> None:
    fake.cards[ICCID].update(
        auto_renew=True,
        auto_renew_plan_code="JP-30D-10GB",
        auto_renew_monthly_cap={"amount": 20000, "currency": "USD"},
    )

    page = traveller.get(f"/cards/{ICCID}").text

    assert 'value="200.00"' in page and "At most $200.00 a month." in page


def test_the_browsers_own_favicon_request_finds_an_icon(client: TestClient) -> None:
    answer = client.get("/favicon.ico")

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("image/svg+xml")


def test_the_chinese_plans_page_names_plans_and_countries_in_chinese(client: TestClient) -> None:
    page = client.get("/plans", headers={"Accept-Language": ACCEPT["zh-CN"]}).text

    assert "<h2>日本 10 GB / 30 天</h2>" in page and "Japan 30 days 10 GB" not in page
    assert "日本、韩国和泰国" in page and "JP, KR" not in page
    # A plan the seller's file does not name yet keeps the catalogue's name.
    assert "<h2>Asia day pass</h2>" in page


def test_the_english_plans_page_keeps_the_catalogues_names_and_names_the_countries(
    client: TestClient,
) -> None:
    page = client.get("/plans", headers={"Accept-Language": ACCEPT["en"]}).text

    assert "<h2>Japan 30 days 10 GB</h2>" in page
    assert "Japan, South Korea, and Thailand" in page


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('["fr"]\n"JP-1D-1GB" = "Japon"\n', "[fr] is not a language of the site"),
        ('["zh-CN"]\n"JP-1D-1GB" = ""\n', "[zh-CN] JP-1D-1GB must be a non-empty name"),
        ('"zh-CN" = 3\n', "[zh-CN] must be a table"),
        ('["zh-CN"\n', "not valid TOML"),
    ],
)
def test_a_plan_names_file_the_site_cannot_use_is_refused_saying_where(
    tmp_path: Path, text: str, said: str
) -> None:
    path = tmp_path / "plan_names.toml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(PlanNamesError, match=re.escape(said)):
        read_names(path)


def test_the_shipped_plan_names_file_is_usable() -> None:
    names = read_names(PLAN_NAMES)

    assert names["zh-CN"]["JP-30D-10GB"] == "日本 10 GB / 30 天"
