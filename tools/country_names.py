"""Regenerate ``shared/records/country_names.json`` from Debian's ``iso-codes``.

Usage: ``python -m tools.country_names [--iso-codes /usr/share/iso-codes/json]
[--locales /usr/share/locale]``. The names are committed, like the codes in
``shared/records/countries.py``, so every image mails the same names; this only refreshes
them when ``iso-codes`` changes. The short (common) name is used where ISO has one
("Bolivia", not "Bolivia, Plurinational State of").
"""

from __future__ import annotations

import argparse
import gettext
import json
import logging
from pathlib import Path

from shared.records.countries import COUNTRY_NAMES_PATH, EUROPEAN_UNION, ISO_3166_ALPHA2

log = logging.getLogger(__name__)

# gettext locale of each UN language besides English.
LOCALES = {"fr": "fr", "es": "es", "ru": "ru", "zh": "zh_CN", "ar": "ar"}
# ``eu`` is an exceptional reservation: iso-codes does not list it.
EUROPEAN_UNION_NAMES = {
    "en": "European Union",
    "fr": "Union européenne",
    "es": "Unión Europea",
    "ru": "Европейский союз",
    "zh": "欧洲联盟",
    "ar": "الاتحاد الأوروبي",
}


def build(iso_codes: Path, locales: Path) -> dict[str, dict[str, str]]:
    """code -> UN language -> name, for every code ``countries.py`` knows."""
    entries = json.loads((iso_codes / "iso_3166-1.json").read_text(encoding="utf-8"))["3166-1"]
    translations = {
        lang: gettext.translation("iso_3166-1", str(locales), languages=[loc])
        for lang, loc in LOCALES.items()
    }
    names: dict[str, dict[str, str]] = {}
    for entry in entries:
        code = entry["alpha_2"].lower()
        short = entry.get("common_name") or entry["name"]
        by_language = {"en": short}
        for lang, tr in translations.items():
            translated = tr.gettext(short)
            # Untranslated short name: the translated full name beats an English word.
            by_language[lang] = translated if translated != short else tr.gettext(entry["name"])
        names[code] = by_language
    names[EUROPEAN_UNION] = EUROPEAN_UNION_NAMES
    missing = sorted(ISO_3166_ALPHA2 - names.keys())
    if missing:
        raise SystemExit(f"iso-codes lacks {missing}")
    return {code: names[code] for code in sorted(names)}


def main() -> None:
    """Write the JSON file."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iso-codes", type=Path, default=Path("/usr/share/iso-codes/json"))
    parser.add_argument("--locales", type=Path, default=Path("/usr/share/locale"))
    args = parser.parse_args()
    names = build(args.iso_codes, args.locales)
    text = json.dumps(names, ensure_ascii=False, indent=1, sort_keys=True)
    COUNTRY_NAMES_PATH.write_text(text + "\n", encoding="utf-8")
    logging.basicConfig(level=logging.INFO)
    log.info("%d countries written to %s", len(names), COUNTRY_NAMES_PATH)


if __name__ == "__main__":
    main()
