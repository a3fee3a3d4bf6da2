"""Schema migrations, on SQLite and PostgreSQL: the models and the migrations agree (the drift
check), the baseline is v0.1.0's schema, a v0.1.0 database is stamped and then upgraded, a
database no release made is refused untouched, and a service refuses to start on a database
that is not at head, naming the command that fixes it."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from services.checkpoint.bootstrap import bootstrap as checkpoint_app
from services.checkpoint.settings import CheckpointSettings
from services.monitor.bootstrap import bootstrap as monitor_app
from services.monitor.settings import MonitorSettings
from services.notifier.bootstrap import bootstrap as notifier_app
from services.notifier.settings import NotifierSettings
from services.registry.bootstrap import bootstrap as registry_app
from services.registry.settings import RegistrySettings
from shared.db import create_engine
from shared.migrations import BASELINE, SchemaError, Upgrade
from tests.support.databases import DbFactory
from tests.support.upgrade import (
    SERVICES,
    create_v010_schema,
    load_v010_rows,
    row_counts,
    schema_of,
)
from tools import migrate
from tools.migrate import migrations

ROOT = Path(__file__).resolve().parents[2]


def _app(service: str, url: str, tmp: Path) -> FastAPI:
    """The service's app as its main module builds it, on ``url`` (nothing started)."""
    common: dict[str, Any] = {"database_url": url, "environment": "test"}
    if service == "registry":
        return registry_app(
            RegistrySettings(
                **common, admin_token="test-admin-token-0123456789", jwt_private_key_path=tmp / "k"
            )
        )
    if service == "checkpoint":
        return checkpoint_app(CheckpointSettings(**common))
    if service == "notifier":
        return notifier_app(NotifierSettings(**common))
    return monitor_app(MonitorSettings(**common))


async def _table_names(url: str) -> set[str]:
    return set(await row_counts(url))


# ------------------------------------------------------------------ models and migrations


@pytest.mark.parametrize("service", SERVICES)
async def test_the_models_and_the_migrations_agree(service: str, db_url: DbFactory) -> None:
    """The CI drift check: autogenerate finds nothing to write on a database at head."""
    url = await db_url(service)
    await migrations(service).upgrade(url)
    differences = await migrations(service).diff(url)
    assert differences == [], (
        f"the {service} models differ from its migrations: run "
        f"`python -m tools.migrate {service} --autogenerate 'what changed'` and review the "
        "file it writes:\n" + "\n".join(map(str, differences))
    )


@pytest.mark.parametrize("service", SERVICES)
async def test_the_models_hold_every_table_the_service_wires(service: str, tmp_path: Path) -> None:
    """What autogenerate compares (``models()``) is every table the running kit uses."""
    app = _app(service, f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}", tmp_path)
    kit = app.state.kit
    try:
        assert kit.migrations is migrations(service)
        declared = set(kit.migrations.models().tables)
        assert set(kit.metadata.tables) == declared, (
            f"declare the kit tables the {service} uses in services/{service}/migrations"
        )
    finally:
        await kit.engine.dispose()


# ------------------------------------------------------------------ v0.1.0 databases


@pytest.mark.parametrize("service", SERVICES)
async def test_the_baseline_is_the_schema_v0_1_0_made(service: str, db_url: DbFactory) -> None:
    released = await db_url(f"{service}-v010")
    built = await db_url(f"{service}-baseline")
    await create_v010_schema(released, service)
    await migrations(service).upgrade(built, BASELINE)
    schema = await schema_of(built)
    assert schema == await schema_of(released)
    assert set(schema) == migrations(service).released_tables()


async def test_a_v0_1_0_database_is_stamped_at_the_baseline_then_upgraded(
    db_url: DbFactory,
) -> None:
    for service in SERVICES:
        url = await db_url(service)
        await create_v010_schema(url, service)
        await load_v010_rows(url, service)
        head = migrations(service).head
        assert await migrations(service).upgrade(url) == Upgrade(service, BASELINE, head, True)
        assert await migrations(service).upgrade(url) == Upgrade(service, head, head, False)
        engine = create_engine(url, poolclass=NullPool)
        try:
            assert await migrations(service).check(engine) == head
        finally:
            await engine.dispose()


async def test_delivery_columns_added_by_hand_are_kept(db_url: DbFactory) -> None:
    """The v0.1.0 models told operators to add the delivery worker's columns by hand until
    this migration existed: 0002 adds only the missing ones."""
    url = await db_url("notifier")
    await create_v010_schema(url, "notifier")
    await load_v010_rows(url, "notifier")
    engine = create_engine(url, poolclass=NullPool)
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE deliveries ADD COLUMN claimed_by VARCHAR(64)"))
        await conn.execute(text("ALTER TABLE deliveries ADD COLUMN government VARCHAR(8)"))
        await conn.execute(text("UPDATE deliveries SET claimed_by = 'by-hand'"))
    await engine.dispose()
    before = await row_counts(url)
    await migrations("notifier").upgrade(url)
    assert await migrations("notifier").diff(url) == []
    assert (await row_counts(url))["deliveries"] == before["deliveries"]
    engine = create_engine(url, poolclass=NullPool)
    async with engine.connect() as conn:
        kept = await conn.scalar(
            text("SELECT count(*) FROM deliveries WHERE claimed_by = 'by-hand'")
        )
    await engine.dispose()
    assert kept == before["deliveries"]


async def test_tables_no_release_made_are_refused_and_left_alone(db_url: DbFactory) -> None:
    url = await db_url("notifier")
    await create_v010_schema(url, "notifier")
    engine = create_engine(url, poolclass=NullPool)
    async with engine.begin() as conn:  # as an unreleased build's create_all left it
        await conn.execute(text("CREATE TABLE parked_events (id INTEGER PRIMARY KEY)"))
    await engine.dispose()
    before = await row_counts(url)
    with pytest.raises(SchemaError, match=re.escape("tables v0.1.0 never had: parked_events")):
        await migrations("notifier").upgrade(url)
    assert await row_counts(url) == before, "nothing changed, no version table"


async def test_an_empty_database_goes_straight_to_head(db_url: DbFactory) -> None:
    url = await db_url("registry")
    head = migrations("registry").head
    assert await migrations("registry").upgrade(url) == Upgrade("registry", None, head)
    assert await _table_names(url) == set(migrations("registry").models().tables)


async def test_migrations_started_together_take_turns(db_url: DbFactory) -> None:
    """Several runs in one process (the test fixtures start services at once)."""
    shared = await db_url("monitor")
    urls = [shared, shared, *[await db_url(s) for s in SERVICES if s != "monitor"]]
    names = ["monitor", "monitor", *[s for s in SERVICES if s != "monitor"]]
    done = await asyncio.gather(
        *(migrations(n).upgrade(u) for n, u in zip(names, urls, strict=True))
    )
    assert sorted(d.before is None for d in done[:2]) == [False, True], "one of two did it"
    assert all(d.after == migrations(d.service).head for d in done)


async def test_instances_migrating_at_once_take_turns(db_url: DbFactory) -> None:
    """Two processes on one database (instances starting together): the schema lock
    makes the later one wait and find nothing to do."""
    env = {**os.environ, "MONITOR_DATABASE_URL": await db_url("monitor"), "LOG_FORMAT": "text"}
    runs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.monitor.migrate",
            env=env,
            cwd=ROOT,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    logs = [(await asyncio.wait_for(run.communicate(), 120))[1].decode() for run in runs]
    assert [run.returncode for run in runs] == [0, 0], logs
    assert sorted("upgraded to" in log for log in logs) == [False, True], logs
    assert any("nothing to do" in log for log in logs), logs


# ------------------------------------------------------------------ refusing to start


async def _at(service: str, url: str, state: str) -> None:
    """Leave the database at ``url`` in ``state``: empty, as v0.1.0 made it, at the baseline
    revision, or at a revision this release doesn't know."""
    if state == "v0.1.0":
        await create_v010_schema(url, service)
    elif state == "baseline":
        await migrations(service).upgrade(url, BASELINE)
    elif state == "newer":
        await migrations(service).upgrade(url)
        engine = create_engine(url, poolclass=NullPool)
        async with engine.begin() as conn:
            table = migrations(service).version_table
            await conn.execute(text(f"UPDATE {table} SET version_num = '9999'"))
        await engine.dispose()


@pytest.mark.parametrize(
    ("service", "state", "says"),
    [
        ("registry", "baseline", "is at schema revision 0001"),
        ("checkpoint", "baseline", "is at schema revision 0001"),
        ("notifier", "baseline", "is at schema revision 0001"),
        ("monitor", "baseline", "is at schema revision 0001"),
        ("monitor", "empty", "is empty"),
        ("monitor", "v0.1.0", "has no migration history (a v0.1.0 database)"),
        ("monitor", "newer", "revision 9999, which this release does not know"),
    ],
)
async def test_a_service_refuses_a_database_not_at_head(
    service: str, state: str, says: str, db_url: DbFactory, tmp_path: Path
) -> None:
    url = await db_url(service)
    await _at(service, url, state)
    before = await row_counts(url)
    app = _app(service, url, tmp_path)
    with pytest.raises(SchemaError, match=re.escape(says)) as refused:
        async with app.router.lifespan_context(app):
            pytest.fail("the service started")
    if state != "newer":
        assert f"run `python -m services.{service}.migrate`" in str(refused.value)
    assert await row_counts(url) == before, "the start created or altered nothing"


def test_the_service_process_refuses_until_migrated_then_starts_checking(tmp_path: Path) -> None:
    """``python -m services.registry.main`` on an empty database exits saying what to run;
    ``python -m services.registry.migrate`` then brings it to head (``--check`` agrees)."""
    env = {
        **os.environ,
        "REGISTRY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}",
        "REGISTRY_HTTP_PORT": "0",
        "REGISTRY_METRICS_PORT": "0",
        "ABSCH_ENV": "test",
        "ABSCH_ADMIN_TOKEN": "test-admin-token-0123456789",
        "JWT_PRIVATE_KEY_PATH": str(tmp_path / "key.pem"),
        "KAFKA_BOOTSTRAP": "127.0.0.1:9",
        "LOG_FORMAT": "text",
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    refused = run("services.registry.main")
    assert refused.returncode != 0
    assert "registry refuses to start" in refused.stderr
    assert "run `python -m services.registry.migrate`" in refused.stderr
    assert run("services.registry.migrate", "--check").returncode == 1
    migrated = run("services.registry.migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "registry: empty database, upgraded to" in migrated.stderr
    checked = run("services.registry.migrate", "--check")
    assert checked.returncode == 0, checked.stderr


def test_tools_migrate_all_brings_every_database_to_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for service in SERVICES:
        url = f"sqlite+aiosqlite:///{tmp_path / f'{service}.db'}"
        monkeypatch.setenv(f"{service.upper()}_DATABASE_URL", url)
    assert migrate.main(["--check"]) == 1
    assert not (tmp_path / "registry.db").exists(), "--check creates nothing"
    assert migrate.main(["--all"]) == 0
    assert migrate.main(["--check"]) == 0
    assert migrate.main(["--diff", "--all"]) == 0
    with pytest.raises(SystemExit):
        migrate.main(["nobody"])
