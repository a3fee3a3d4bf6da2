"""Schema migrations: one Alembic history per service, run before the service starts.

Each service keeps its migrations in ``services/<name>/migrations/`` (``env.py``,
``versions/``) and its revision in a version table of its own, ``alembic_version_<name>``,
in its own database. :meth:`Migrations.upgrade` brings a database to head:

- an empty database gets every revision from the first;
- a database with tables but no version table was created by v0.1.0 (which ran
  ``create_all`` at start): it is stamped at :data:`BASELINE` (v0.1.0's tables) first,
  then upgraded; one whose tables are not v0.1.0's is refused, nothing changed;
- a database at an older revision gets the revisions after it; one at a revision this
  release does not know (a newer release migrated it) is refused.

The whole run is one transaction. PostgreSQL takes the schema advisory lock first, so
instances migrating together take turns and the later ones find nothing to do. SQLite
takes its write lock up front (``BEGIN IMMEDIATE``, statements issued by this code, not the
driver, which would commit each DDL statement apart) with foreign keys off while batch
mode copies tables (SQLite's procedure for schema changes), and checks them before the
commit. A service never migrates itself: it calls :meth:`Migrations.check` at start and
refuses to run on a database that is not at head, naming the command that fixes it.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import MetaData, event, inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from shared.db import SCHEMA_LOCK, create_engine

log = logging.getLogger(__name__)

BASELINE = "0001"  # the tables of v0.1.0, the last release before migrations
# New revision files: r0003_add_drafts.py (a module name ruff and mypy accept).
FILE_TEMPLATE = "r%%(rev)s_%%(slug)s"


class SchemaError(RuntimeError):
    """A database this release can't run on, or can't migrate, as it is."""


@dataclass(frozen=True)
class Upgrade:
    """What one :meth:`Migrations.upgrade` did."""

    service: str
    before: str | None  # the revision found (the baseline when stamped); None: empty
    after: str
    stamped: bool = False  # a v0.1.0 database was stamped at the baseline first

    def describe(self) -> str:
        """One line for the log."""
        if self.stamped:
            start = f"v0.1.0 database stamped {self.before}"
        elif self.before is None:
            start = "empty database"
        else:
            start = f"at {self.before}"
        if self.before == self.after:
            return f"{self.service}: {start}, nothing to do"
        return f"{self.service}: {start}, upgraded to {self.after}"


class Migrations:
    """The migration history of one service's database.

    ``package`` holds ``env.py``, ``script.py.mako`` and ``versions/``; ``models`` returns
    every table the service uses (:func:`shared.kit.models.service_models`), what
    autogenerate and the drift check compare the migrations with.
    """

    def __init__(self, service: str, package: str, models: Callable[[], MetaData]) -> None:
        self.service = service
        self.package = package
        self.models = models
        self.version_table = f"alembic_version_{service}"

    @property
    def command(self) -> str:
        """The command that brings this service's database to head."""
        return f"python -m services.{self.service}.migrate"

    @functools.cached_property
    def location(self) -> Path:
        """The folder of ``env.py`` and ``versions/``."""
        module = import_module(self.package)
        assert module.__file__ is not None
        return Path(module.__file__).parent

    def config(self, connection: Connection | None = None) -> Config:
        """An Alembic configuration handing ``connection`` (and these migrations) to
        ``env.py``, which runs :func:`run_environment`."""
        cfg = Config()
        cfg.set_main_option("script_location", str(self.location))
        cfg.set_main_option("file_template", FILE_TEMPLATE)
        cfg.attributes["migrations"] = self
        cfg.attributes["connection"] = connection
        return cfg

    def context_options(self) -> dict[str, Any]:
        """Options of every migration context, so runs and comparisons agree."""
        return {
            "version_table": self.version_table,
            "render_as_batch": True,  # SQLite alters a table by copying it
            "compare_type": True,
        }

    @functools.cached_property
    def script(self) -> ScriptDirectory:
        """The revisions (read once per process)."""
        return ScriptDirectory.from_config(self.config())

    @property
    def head(self) -> str:
        """The revision this release runs on."""
        head = self.script.get_current_head()
        if head is None:
            raise SchemaError(f"{self.service} has no migrations in {self.location}")
        return head

    def released_tables(self) -> frozenset[str]:
        """The tables v0.1.0 created, as the baseline revision declares them."""
        baseline = self.script.get_revision(BASELINE)
        assert baseline is not None
        return frozenset(baseline.module.RELEASED_TABLES)

    def knows(self, revision: str) -> bool:
        """True when ``revision`` is one of this release's."""
        try:
            return self.script.get_revision(revision) is not None
        except CommandError:  # ResolutionError is one
            return False

    # -- running --------------------------------------------------------------------------

    async def upgrade(self, url: str, revision: str = "head") -> Upgrade:
        """Bring the database at ``url`` to ``revision`` (stamping a v0.1.0 one first), in
        one transaction under the schema lock; see the module's docstring."""
        engine = migration_engine(url)
        try:
            async with _alembic_turn(), engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    await conn.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK}
                    )
                done = await conn.run_sync(self._upgrade, revision)
                if conn.dialect.name == "sqlite":
                    await conn.run_sync(_check_foreign_keys)
        finally:
            await engine.dispose()
        log.info("%s", done.describe())
        return done

    def _upgrade(self, conn: Connection, revision: str) -> Upgrade:
        before = self._current(conn)
        stamped = False
        if before is None:
            found = self._tables(conn)
            if found:
                self._require_released(found)
                command.stamp(self.config(conn), BASELINE)
                before, stamped = BASELINE, True
        elif not self.knows(before):
            raise SchemaError(self._unknown(before))
        command.upgrade(self.config(conn), revision)
        after = self._current(conn)
        assert after is not None
        return Upgrade(self.service, before, after, stamped)

    def _require_released(self, found: set[str]) -> None:
        released = self.released_tables()
        if found == released:
            return
        parts = []
        if found - released:
            parts.append(f"tables v0.1.0 never had: {', '.join(sorted(found - released))}")
        if released - found:
            parts.append(f"v0.1.0 tables missing: {', '.join(sorted(released - found))}")
        raise SchemaError(
            f"the {self.service} database has tables but no migration history, and they are "
            f"not v0.1.0's ({'; '.join(parts)}): no release created it. Restore a backup "
            "taken under a release, or start from an empty database and replay the topics "
            "(docs/operations.md)"
        )

    async def current(self, engine: AsyncEngine) -> str | None:
        """The database's revision (None: no migration history)."""
        async with engine.connect() as conn:
            return await conn.run_sync(self._current)

    def _current(self, conn: Connection) -> str | None:
        context = MigrationContext.configure(conn, opts={"version_table": self.version_table})
        heads = context.get_current_heads()
        if len(heads) > 1:
            raise SchemaError(f"the {self.service} database has several heads: {heads}")
        return heads[0] if heads else None

    def _tables(self, conn: Connection) -> set[str]:
        return set(inspect(conn).get_table_names()) - {self.version_table}

    async def check(self, engine: AsyncEngine) -> str:
        """The database's revision when it is at head, else :class:`SchemaError` saying what
        was found and which command fixes it (a service's start refuses with it)."""
        async with engine.connect() as conn:
            current = await conn.run_sync(self._current)
            tables = await conn.run_sync(self._tables) if current is None else set()
        head = self.head
        if current == head:
            return current
        run = f"run `{self.command}` (or `python -m tools.migrate --all`) first"
        if current is None and not tables:
            found = "is empty"
        elif current is None:
            found = "has no migration history (a v0.1.0 database)"
        elif not self.knows(current):
            raise SchemaError(self._unknown(current))
        else:
            found = f"is at schema revision {current}"
        raise SchemaError(
            f"the {self.service} database {found}; this release needs revision {head}: {run}"
        )

    def _unknown(self, current: str) -> str:
        return (
            f"the {self.service} database is at schema revision {current}, which this release "
            f"does not know (its newest is {self.head}): a newer release migrated it. Run that "
            "release, or restore the backup taken before the upgrade (docs/operations.md)"
        )

    # -- comparing with the models ----------------------------------------------------------

    async def diff(self, url: str) -> list[Any]:
        """What autogenerate would write for the database at ``url``: the models'
        differences from it (empty when they agree)."""
        engine = create_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(self._diff)
        finally:
            await engine.dispose()

    def _diff(self, conn: Connection) -> list[Any]:
        context = MigrationContext.configure(conn, opts=self.context_options())
        return list(compare_metadata(context, self.models()))

    async def drift(self) -> list[Any]:
        """The models' differences from a scratch SQLite database built by the migrations."""
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite+aiosqlite:///{Path(tmp) / f'{self.service}.db'}"
            await self.upgrade(url)
            return await self.diff(url)

    async def autogenerate(self, message: str) -> Path | None:
        """Write the next revision (``versions/r<NNNN>_<message>.py``) from the models'
        differences with a scratch SQLite database at head; None when there are none.
        Review it before committing: renames, data moves and defaults for new NOT NULL
        columns on existing rows are a person's job."""
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite+aiosqlite:///{Path(tmp) / f'{self.service}.db'}"
            await self.upgrade(url)
            if not await self.diff(url):
                return None
            engine = migration_engine(url)
            try:
                async with _alembic_turn(), engine.begin() as conn:
                    written = await conn.run_sync(self._revision, message)
            finally:
                await engine.dispose()
        return written

    def _revision(self, conn: Connection, message: str) -> Path:
        numbers = [int(s.revision) for s in self.script.walk_revisions() if s.revision.isdigit()]
        rev_id = f"{max(numbers, default=0) + 1:04d}"
        script = command.revision(
            self.config(conn), message=message, autogenerate=True, rev_id=rev_id
        )
        assert script is not None
        assert not isinstance(script, list)
        return Path(script.path)


_TURNS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _alembic_turn() -> asyncio.Lock:
    """One Alembic run at a time in this process: its ``context`` and ``op`` are module
    globals, which two runs interleaving on one event loop (tests and benchmarks start
    several services at once) would take from each other. Taken before the database's
    own lock, so two runs never wait for each other in opposite orders."""
    loop = asyncio.get_running_loop()
    if loop not in _TURNS:
        _TURNS[loop] = asyncio.Lock()
    return _TURNS[loop]


def run_environment() -> None:
    """The body of every service's ``env.py``: run the migrations, or autogenerate, on the
    connection :class:`Migrations` handed over, inside its transaction."""
    from alembic import context  # only importable while Alembic runs env.py

    migrations = context.config.attributes.get("migrations")
    connection = context.config.attributes.get("connection")
    if not isinstance(migrations, Migrations) or connection is None:
        raise SchemaError(
            "these migrations run through `python -m services.<name>.migrate` or "
            "`python -m tools.migrate`, not the alembic command"
        )
    context.configure(
        connection=connection,
        target_metadata=migrations.models(),
        **migrations.context_options(),
    )
    with context.begin_transaction():
        context.run_migrations()


def migration_engine(url: str) -> AsyncEngine:
    """An engine for one migration run (no pool). On SQLite this code begins transactions
    itself and takes the write lock at once, with foreign keys off while tables are copied
    (:func:`_check_foreign_keys` runs before the commit)."""
    engine = create_engine(url, poolclass=NullPool)
    if engine.dialect.name != "sqlite":
        return engine

    @event.listens_for(engine.sync_engine, "connect")
    def _own_transactions(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the driver's BEGIN would skip DDL
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=OFF")  # a no-op inside a transaction: set it here
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _check_foreign_keys(conn: Connection) -> None:
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise SchemaError(f"the migration would break foreign keys: {broken[:5]}")


# -- command line ---------------------------------------------------------------------------

Target = tuple[Migrations, Callable[[], str]]  # the migrations, the database URL (settings)


def main(targets: Mapping[str, Target], argv: Sequence[str] | None = None, *, prog: str) -> int:
    """``python -m tools.migrate`` and ``python -m services.<name>.migrate``: bring each
    database to head (the default), report (``--check``), compare the models with the
    migrations (``--diff``), or write the next revision (``--autogenerate MESSAGE``)."""
    parser = argparse.ArgumentParser(prog=prog, description=main.__doc__)
    if len(targets) > 1:
        parser.add_argument("services", nargs="*", metavar="SERVICE", help=", ".join(targets))
        parser.add_argument("--all", action="store_true", help="every service (the default)")
    parser.add_argument("--url", help="this database instead of the settings' (one service)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 unless every one is at head"
    )
    mode.add_argument(
        "--diff",
        action="store_true",
        help="compare the models with the migrations (on a scratch SQLite database, or --url "
        "at head); exit 1 when autogenerate would write anything",
    )
    mode.add_argument("--autogenerate", metavar="MESSAGE", help="write the next revision")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    chosen = list(getattr(args, "services", None) or targets)
    if unknown := [name for name in chosen if name not in targets]:
        parser.error(f"unknown service {', '.join(unknown)}; choose from {', '.join(targets)}")
    if args.url and len(chosen) != 1:
        parser.error("--url needs exactly one service")
    try:
        return asyncio.run(_run(args, [(name, *targets[name]) for name in chosen]))
    except (SchemaError, SQLAlchemyError, OSError) as exc:  # a refusal, or no database
        log.error("%s", exc)
        return 1


async def _run(
    args: argparse.Namespace, chosen: list[tuple[str, Migrations, Callable[[], str]]]
) -> int:
    """Each chosen service in turn; 1 when any check or comparison failed."""
    code = 0
    for name, migrations, settings_url in chosen:
        if args.autogenerate:
            path = await migrations.autogenerate(args.autogenerate)
            if path is None:
                log.info("%s: the models match the migrations; nothing written", name)
            else:
                _tidy(path)
                log.info("%s: wrote %s; review it before committing", name, path)
            continue
        if args.diff and not args.url:
            differences = await migrations.drift()
        elif args.diff:
            differences = await migrations.diff(args.url)
        else:
            differences = None
        if differences is not None:
            for difference in differences:
                sys.stdout.write(f"{name}: {difference}\n")
            if differences:
                log.error("%s: the models differ from the migrations: run --autogenerate", name)
                code = 1
            continue
        url = args.url or settings_url()
        if args.check and (missing := _missing_file(url)) is not None:
            log.error(
                "the %s database %s does not exist: run `%s`", name, missing, migrations.command
            )
            code = 1
            continue
        if args.check:
            engine = create_engine(url, poolclass=NullPool)
            try:
                revision = await migrations.check(engine)
                log.info("%s: at head %s", name, revision)
            except SchemaError as exc:
                log.error("%s", exc)
                code = 1
            finally:
                await engine.dispose()
            continue
        await migrations.upgrade(url)
    return code


def _missing_file(url: str) -> Path | None:
    """The file of a SQLite URL that names none yet (``--check`` must not create it)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database)
    return None if path.exists() else path


def _tidy(path: Path) -> None:
    """Format a written revision the way the project's files are (when ruff is there)."""
    for step in (["format"], ["check", "--fix", "--quiet"]):
        subprocess.run(
            [sys.executable, "-m", "ruff", *step, str(path)], check=False, capture_output=True
        )
