"""The governments the system knows: ISO 3166-1 alpha-2 codes, lower case [C1].

All 249 officially assigned codes (as Debian's ``iso-codes`` lists them), plus ``eu``: the
European Union is a Party to the Nagoya Protocol and publishes national records in the
clearing-house under that exceptionally reserved code. Committed here, not read from the
system at run time, so every image answers the same.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

_ASSIGNED = """
ad ae af ag ai al am ao aq ar as at au aw ax az
ba bb bd be bf bg bh bi bj bl bm bn bo bq br bs bt bv bw by bz
ca cc cd cf cg ch ci ck cl cm cn co cr cu cv cw cx cy cz
de dj dk dm do dz
ec ee eg eh er es et
fi fj fk fm fo fr
ga gb gd ge gf gg gh gi gl gm gn gp gq gr gs gt gu gw gy
hk hm hn hr ht hu
id ie il im in io iq ir is it
je jm jo jp
ke kg kh ki km kn kp kr kw ky kz
la lb lc li lk lr ls lt lu lv ly
ma mc md me mf mg mh mk ml mm mn mo mp mq mr ms mt mu mv mw mx my mz
na nc ne nf ng ni nl no np nr nu nz
om
pa pe pf pg ph pk pl pm pn pr ps pt pw py
qa
re ro rs ru rw
sa sb sc sd se sg sh si sj sk sl sm sn so sr ss st sv sx sy sz
tc td tf tg th tj tk tl tm tn to tr tt tv tw tz
ua ug um us uy uz
va vc ve vg vi vn vu
wf ws
ye yt
za zm zw
"""
ISO_3166_ALPHA2: frozenset[str] = frozenset(_ASSIGNED.split())
EUROPEAN_UNION = "eu"
KNOWN_GOVERNMENTS: frozenset[str] = ISO_3166_ALPHA2 | {EUROPEAN_UNION}


def is_known_government(code: str) -> bool:
    """True for a government code the system knows (any letter case)."""
    return code.lower() in KNOWN_GOVERNMENTS


# Names per UN language, generated from the same iso-codes by ``python -m tools.country_names``.
COUNTRY_NAMES_PATH = Path(__file__).with_name("country_names.json")


@lru_cache(maxsize=1)
def _names() -> dict[str, dict[str, str]]:
    loaded: dict[str, dict[str, str]] = json.loads(COUNTRY_NAMES_PATH.read_text(encoding="utf-8"))
    return loaded


def country_name(code: str, language: str = "en") -> str:
    """A government's short name in a UN language, else in English; an unknown code is
    returned upper-cased."""
    names = _names().get(code.strip().lower())
    if names is None:
        return code.strip().upper()
    return names.get(language) or names["en"]
