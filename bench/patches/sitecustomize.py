"""What-if patches for the service processes of a benchmark run (``--patch NAME``).

``python -m bench --patch envelope-cache ...`` puts this folder first on the services'
PYTHONPATH and names the patches in ``BENCH_PATCHES``; Python imports this module at start
(``sitecustomize``) and applies them in memory. The repository's code is not touched: this
is how the benchmark measures the gain of a suggested change before anyone makes it.

- ``envelope-cache``: ``CloudEvent[Model]`` is built once per model instead of going through
  pydantic's ``__class_getitem__`` for every event encoded or decoded.
"""

from __future__ import annotations

import os
from typing import Any

PATCHES = {p.strip() for p in os.environ.get("BENCH_PATCHES", "").split(",") if p.strip()}


def _envelope_cache() -> None:
    from shared.events.envelope import CloudEvent

    original = CloudEvent.__class_getitem__.__func__  # type: ignore[attr-defined]
    cache: dict[Any, Any] = {}

    def cached(cls: Any, params: Any) -> Any:
        key = (cls, params)
        try:
            return cache[key]
        except KeyError:
            result = cache[key] = original(cls, params)
            return result
        except TypeError:  # unhashable parameters
            return original(cls, params)

    CloudEvent.__class_getitem__ = classmethod(cached)  # type: ignore[assignment,method-assign]


if "envelope-cache" in PATCHES:
    _envelope_cache()
