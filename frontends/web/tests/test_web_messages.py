"""The message catalogues: every message of the site has its Chinese, with the same placeholders."""

import re
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from web import i18n

PACKAGE = Path(i18n.__file__).parent
PLACEHOLDER = re.compile(r"%\([a-z_]+\)[sd]|\{[a-z_]+\}")


def extracted() -> set[str | tuple[str, ...]]:
    """Every message the templates and the code mark, as pybabel extracts them."""
    methods = [("**.py", "python"), ("templates/**.html", "jinja2")]
    options = {"templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    found: set[str | tuple[str, ...]] = set()
    for _, _, message, _, _ in extract_from_dir(
        str(PACKAGE),
        methods,
        options_map=options,
        keywords={"_": None, "gettext_": None, "ngettext": (1, 2)},
    ):
        found.add(message)
    return found


def chinese() -> dict[str | tuple[str, ...], object]:
    path = i18n.CATALOGUES / "zh_CN" / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as po:
        return {m.id: m.string for m in read_po(po) if m.id}


def test_every_message_of_the_site_has_its_chinese_translation() -> None:
    catalogue = chinese()
    messages = extracted()

    assert len(messages) > 200, "the extraction found the site's messages"
    missing = sorted(str(m) for m in messages if not catalogue.get(m))

    assert not missing, f"run scripts/web-messages.sh and translate: {missing}"


def test_each_translation_keeps_the_placeholders_of_its_message() -> None:
    for message, translation in chinese().items():
        # A plural message is checked against its plural form (Chinese has that one form only).
        source = message if isinstance(message, str) else message[-1]
        target = translation if isinstance(translation, str) else translation[0]
        assert sorted(PLACEHOLDER.findall(source)) == sorted(PLACEHOLDER.findall(target)), message


def test_accept_language_picks_the_best_of_our_languages() -> None:
    assert i18n.negotiate("zh-CN,zh;q=0.9,en;q=0.8") == "zh-CN"
    assert i18n.negotiate("fr-FR,fr;q=0.9,en;q=0.5,zh;q=0.4") == "en"
    assert i18n.negotiate("zh-TW;q=0.8,en-US") == "en"
    assert i18n.negotiate("de, ja") == "en"
    assert i18n.negotiate(None) == "en"


def test_money_and_data_are_written_per_locale() -> None:
    i18n.use_locale("zh-CN")
    try:
        assert i18n.format_money({"amount": 9900, "currency": "CNY"}) == "¥99.00"
        assert i18n.format_data(512) == "512 MB"
        assert i18n.format_day("2026-12-06T04:30:00Z") == "2026年12月6日"
    finally:
        i18n.use_locale("en")
    assert i18n.format_money({"amount": 9900, "currency": "CNY"}) == "CN¥99.00"
    assert i18n.format_data(1536) == "1.5 GB"
