"""Session-wide real components: the embedded broker, SMTP sinks, databases.

``KAFKA_BOOTSTRAP`` points the suite at an existing broker instead of the embedded one.
``DATABASE_URL_TEST_PG`` (an asyncpg URL to a server where we may create databases) adds a
PostgreSQL run of every database-backed test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.databases import BACKENDS, DbFactory, databases, skip_unless_backend
from tools.broker import EmbeddedBroker
from tools.smtp_sink import SmtpSink

# Every service instance a test starts binds its metrics listener to a free port (noted by
# tests.support.servers for tests.support.metrics.scrape), never the fixed default, which
# two instances, or a devstack running beside the suite, would fight over.
for _service in ("registry", "checkpoint", "notifier", "monitor"):
    os.environ[f"{_service.upper()}_METRICS_PORT"] = "0"


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The broker every integration test talks to."""
    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    broker = EmbeddedBroker(log_file=tmp_path_factory.mktemp("broker") / "tansu.log")
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def topic_prefix() -> str:
    """Topics of their own for each test, so tests never see each other's events."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpSink]:
    """A real SMTP server on loopback keeping every message."""
    with SmtpSink(maildir=tmp_path / "mail") as sink:
        yield sink


@pytest.fixture(params=BACKENDS)
def db_backend(request: pytest.FixtureRequest) -> str:
    """Each database-backed test runs on SQLite, and on PostgreSQL when configured."""
    skip_unless_backend(str(request.param))
    return str(request.param)


@pytest.fixture
async def db_url(db_backend: str, tmp_path: Path) -> AsyncIterator[DbFactory]:
    """``await db_url("registry")`` gives a fresh, empty database URL for one service."""
    async with databases(db_backend, tmp_path) as make:
        yield make
