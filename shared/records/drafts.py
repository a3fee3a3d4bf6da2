"""Draft models: a record's shape without its publication rules.

The real clearing-house validates a record when it is published, not when its draft is
saved. A draft model is the record model with every field optional and no list minimum,
validated with ``context={DRAFT: True}``, so the model's publication rules stand aside
(``is_draft``: mandatory text, PIC/MAT true, conditional and cross-field rules). What
keeps the system safe holds for drafts as for any record: types, one-line fields,
control characters, lengths, plausible dates and the record's byte bound.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, cast

from annotated_types import MinLen
from pydantic import Field, create_model

from shared.records.common import Record


@cache
def draft_model(model: type[Record]) -> type[Record]:
    """``model`` with every field but ``header`` optional and list minimums dropped."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if name == "header":
            continue  # a draft names its identifier and schema like any record
        kept = [item for item in info.metadata if not isinstance(item, MinLen)]
        if not info.is_required() and len(kept) == len(info.metadata):
            continue
        inner: Any = Annotated[(info.annotation, *kept)] if kept else info.annotation
        # None outside the inner type: an explicit null skips the field's own validators.
        fields[name] = (inner | None, Field(default=None, alias=info.alias))
    built = create_model(
        f"{model.__name__}Draft", __base__=model, __module__=model.__module__, **fields
    )
    return cast(type[Record], built)
