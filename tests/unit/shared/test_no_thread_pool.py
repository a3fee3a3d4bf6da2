"""Every route and dependency of the services runs on the event loop: FastAPI hands a sync
(``def``) one to its thread pool, a thread hop on every request (intake lost ~15 % to one
that only read ``app.state``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from services.checkpoint.api import router as checkpoint
from services.monitor.analytics.api import router as utilization
from services.monitor.api import dashboard_router
from services.monitor.api import router as monitor
from services.notifier.api import router as notifier
from services.registry.api import router as registry
from services.registry.api import well_known

ROUTERS = {
    "checkpoint": checkpoint,
    "monitor": monitor,
    "monitor dashboard": dashboard_router,
    "monitor utilization": utilization,
    "notifier": notifier,
    "registry": registry,
    "registry well-known": well_known,
}


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    if dependant.call is not None:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)


def _on_the_loop(call: Callable[..., Any]) -> bool:
    # A security scheme is an instance with an async __call__.
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(
        getattr(call, "__call__", None)  # noqa: B004
    )


@pytest.mark.parametrize("name", sorted(ROUTERS))
def test_routes_and_dependencies_are_async(name: str) -> None:
    router: APIRouter = ROUTERS[name]
    routes = [r for r in router.routes if isinstance(r, APIRoute)]
    assert routes, f"{name} has no routes"
    sync = {
        f"{route.path} -> {getattr(call, '__qualname__', type(call).__name__)}"
        for route in routes
        for call in _calls(route.dependant)
        if not _on_the_loop(call)
    }
    assert not sync, f"{name}: sync callables run in the thread pool: {sorted(sync)}"
