"""State shared by the benchmarks of one ``python -m bench`` run.

The stack (broker, sink, services) is started lazily and kept between benchmarks that
need it: ``pipeline`` and ``rss`` use all four services; ``intake`` then stops the notifier
and the monitor so that nothing downstream competes with the checkpoint for CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import VAR, QuietGate, progress
from bench.scenario import World, setup
from bench.stack import Stack


@dataclass
class Session:
    quick: bool
    profile: bool = True
    loadgen: str = "auto"
    env_overrides: dict[str, str] = field(default_factory=dict)
    state: Path = field(default_factory=lambda: VAR / "run")
    stack: Stack | None = None
    world: World | None = None
    raw: dict[str, Any] | None = None
    pipeline: dict[str, Any] | None = None
    started: float = field(default_factory=time.time)
    gate: QuietGate = field(default_factory=lambda: QuietGate(20.0, 180.0))

    def __post_init__(self) -> None:
        if self.quick:
            self.gate = QuietGate(2.0, 6.0)

    async def stack_with(self, names: list[str]) -> Stack:
        if self.stack is None:
            self.stack = Stack(self.state, env_overrides=self.env_overrides)
        await self.stack.start_services(names)
        return self.stack

    async def world_for(self, stack: Stack, pool: int) -> World:
        if self.world is None:
            t = time.monotonic()
            self.world = await setup(stack.url("registry"), stack.admin_token, pool=pool)
            progress(
                f"setup through the registry API: {pool} revoked IRCCs, checkpoint, operator "
                f"({time.monotonic() - t:.1f}s)"
            )
        return self.world

    def close(self) -> None:
        if self.stack is not None:
            progress("stopping the stack")
            self.stack.stop()
            self.stack = None
