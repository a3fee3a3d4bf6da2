"""What-if patches for the service processes of a benchmark run (``--patch NAME``).

``python -m bench --patch batch-commit ...`` puts this folder first on the services'
PYTHONPATH and names the patches in ``BENCH_PATCHES``; Python imports this module at start
(``sitecustomize``) and applies them in memory. The repository's code is not touched: this
is how the benchmark measures the gain of a suggested change before anyone makes it.

- ``envelope-cache``: ``CloudEvent[Model]`` is built once per model instead of going through
  pydantic's ``__class_getitem__`` for every event encoded or decoded.
- ``batch-commit``: the notifier's ``DeliveryWorker.run_once`` commits once per batch of
  due mails instead of once per mail (a crash can then resend up to a batch; Message-ID
  stays stable, so receivers can drop the duplicates).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
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


def _batch_commit(module: Any) -> None:
    from sqlalchemy import func, select

    delivery_row = module.DeliveryRow

    async def run_once(self: Any) -> int:
        ctx = self._ctx
        async with ctx.sessions() as session:
            due = (
                await session.scalars(
                    select(delivery_row)
                    .where(
                        delivery_row.status == "pending",
                        delivery_row.next_attempt_at <= ctx.clock(),
                    )
                    .order_by(delivery_row.id)
                    .limit(self._batch)
                )
            ).all()
            for row in due:
                if self._stopping:
                    break
                await self._attempt(session, row)
            await session.commit()
            pending, next_due = (
                await session.execute(
                    select(func.count(), func.min(delivery_row.next_attempt_at)).where(
                        delivery_row.status == "pending"
                    )
                )
            ).one()
            ctx.metrics.pending.set(pending or 0)
        self._pause = self._until(next_due)
        if due:
            ctx.relay.wake()
        return len(due)

    module.DeliveryWorker.run_once = run_once


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs a patch right after a given module has been executed."""

    def __init__(self, name: str, patch: Any) -> None:
        self.name, self.patch = name, patch

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module
        patch = self.patch

        def run(module: Any) -> None:
            exec_module(module)
            patch(module)

        loader.exec_module = run  # type: ignore[method-assign]
        return spec


if "envelope-cache" in PATCHES:
    _envelope_cache()
if "batch-commit" in PATCHES:
    sys.meta_path.insert(0, _AfterImport("services.notifier.delivery", _batch_commit))
