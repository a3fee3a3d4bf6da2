"""The published event contracts: committed JSON Schemas guard against breaking changes.

A compatible change (a new optional field) needs ``make schemas`` to refresh the files;
an incompatible one needs a new ``schemaversion`` and an upcaster.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from shared.events import CATALOG
from shared.events.schemas import current_schema, incompatibilities, schema_file


@pytest.mark.parametrize("event_type", sorted(CATALOG))
def test_models_stay_compatible_with_the_published_schema(event_type: str) -> None:
    spec = CATALOG[event_type]
    path = schema_file(spec)
    assert path.exists(), f"no published schema for {event_type}: run `make schemas`"
    problems = incompatibilities(json.loads(path.read_text()), current_schema(spec))
    assert problems == [], "incompatible change; bump schemaversion and add an upcaster"


@pytest.mark.parametrize("event_type", sorted(CATALOG))
def test_published_schema_is_up_to_date(event_type: str) -> None:
    spec = CATALOG[event_type]
    committed = json.loads(schema_file(spec).read_text())
    assert committed == current_schema(spec), "model changed: run `make schemas`"


def _base() -> dict[str, Any]:
    return current_schema(CATALOG["ircc.published"])


def _data(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema["properties"]["data"]["$ref"].removeprefix("#/$defs/")
    data: dict[str, Any] = schema["$defs"][ref]
    return data


def test_checker_accepts_a_new_optional_field() -> None:
    new = _base()
    _data(new)["properties"]["comment"] = {"type": "string"}
    assert incompatibilities(_base(), new) == []


def test_checker_refuses_removed_fields() -> None:
    new = _base()
    del _data(new)["properties"]["reason"]
    assert incompatibilities(_base(), new) == ["data.reason: removed"]


def test_checker_refuses_new_required_fields() -> None:
    new = _base()
    _data(new)["properties"]["comment"] = {"type": "string"}
    _data(new)["required"].append("comment")
    assert "data.comment: newly required" in incompatibilities(_base(), new)


def test_checker_refuses_type_changes() -> None:
    new = copy.deepcopy(_base())
    _data(new)["properties"]["revision"] = {"type": "string"}
    assert any("data.revision: type" in p for p in incompatibilities(_base(), new))
