"""Fresh, empty databases for a test: SQLite files, or PostgreSQL databases dropped after.

``DATABASE_URL_TEST_PG`` (an asyncpg URL to a server where we may create databases) adds a
PostgreSQL variant of every database-backed test; without it that variant is skipped.
"""

from __future__ import annotations

import os
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from tools.scratch_db import DbFactory, scratch_databases

PG_URL = os.environ.get("DATABASE_URL_TEST_PG")
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

__all__ = ["BACKENDS", "PG_URL", "DbFactory", "databases", "skip_unless_backend"]


def skip_unless_backend(backend: str) -> None:
    """Skip the PostgreSQL variant when no server is configured."""
    if backend == "postgres" and not PG_URL:
        pytest.skip("DATABASE_URL_TEST_PG not set")


def databases(backend: str, tmp: Path) -> AbstractAsyncContextManager[DbFactory]:
    """``await make("registry")`` gives a fresh empty database URL; PostgreSQL ones are
    dropped when the block ends."""
    if backend == "sqlite":
        return scratch_databases(None, tmp)
    assert PG_URL
    return scratch_databases(PG_URL, tmp)
