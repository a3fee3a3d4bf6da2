"""One stack for a whole test module (and database backend), reused by many cases.

``conftest.py`` gives each test its own topic prefix, SMTP sink and databases (function
scope). The security modules build one stack per module and backend instead and reuse it
across many cases (a matrix, a fuzzer, hypothesis examples): :func:`module_stack` makes its
own prefix and databases, so it can back a module-scoped fixture.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.support.databases import databases
from tests.support.stack import Stack, running_stack
from tools.smtp_sink import SmtpSink


@asynccontextmanager
async def module_stack(
    *, kafka: str, backend: str, tmp: Path, smtp: SmtpSink, **extra: Any
) -> AsyncIterator[tuple[Stack, str]]:
    """All four services on fresh databases and a fresh topic prefix; yields the stack and
    the prefix."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    async with (
        databases(backend, tmp) as db_url,
        running_stack(
            kafka=kafka, prefix=prefix, db_url=db_url, tmp=tmp, smtp=smtp, **extra
        ) as stack,
    ):
        yield stack, prefix
