"""A private, throw-away PostgreSQL cluster for fault tests: stop it, start it again.

``PrivateCluster`` runs Debian's server binaries (``/usr/lib/postgresql/<version>/bin``,
the highest version installed): ``initdb`` into a fresh temporary folder (trust
authentication, superuser ``postgres``), then ``pg_ctl start`` on a free loopback port
with its Unix socket in the same folder. ``stop()`` shuts the server down (fast mode by
default) and returns once nothing answers on the port any more; ``start()`` brings it back
on the same data folder and port. Leaving the ``async with`` block stops the server and
removes the folder.

PostgreSQL refuses to run as root: as root, every server command runs as the ``postgres``
user (Debian's package creates it), which then owns the folder.

Without the binaries the test is skipped, or fails under CI (``CI`` set);
``scripts/sysdeps.sh`` installs them (Debian's ``postgresql`` package) when run as root.

    async with PrivateCluster() as pg:
        url = await pg.create_database("registry")  # postgresql+asyncpg://...
        await pg.stop()
        await pg.start()
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import socket
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NoReturn, Self

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.poll import eventually
from tools.ports import free_port

__all__ = ["PG_ROOT", "PrivateCluster", "find_server_binaries"]

PG_ROOT = Path("/usr/lib/postgresql")
HOST = "127.0.0.1"
SUPERUSER = "postgres"
RUN_AS = "postgres"  # the server's user when the tests run as root
STOP_TIMEOUT = 30.0  # seconds pg_ctl waits for the server to go, then for the port to close
START_ATTEMPTS = 3  # a free port can be taken before the server binds it: pick another
# Throw-away data: no fsync (a fast shutdown still checkpoints, so a stop/start cycle keeps
# every committed row), few connections, small shared memory.
SERVER_SETTINGS = {
    "listen_addresses": HOST,
    "fsync": "off",
    "max_connections": "50",
    "shared_buffers": "16MB",
}
_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_VERSION = re.compile(r"^\d+(?:\.\d+)*$")

StopMode = Literal["smart", "fast", "immediate"]


def find_server_binaries(root: Path | None = None) -> Path | None:
    """The ``bin`` folder of the highest PostgreSQL version with ``initdb`` and ``pg_ctl``
    under ``root`` (default ``PG_ROOT``)."""
    found: list[tuple[tuple[int, ...], Path]] = []
    for initdb in (root or PG_ROOT).glob("*/bin/initdb"):
        bindir = initdb.parent
        version = bindir.parent.name
        if _VERSION.match(version) and os.access(bindir / "pg_ctl", os.X_OK):
            found.append((tuple(int(part) for part in version.split(".")), bindir))
    return max(found)[1] if found else None


def _unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it under CI, which must provide a PostgreSQL server."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must provide it")
    pytest.skip(reason)


def _refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return False
    except OSError:
        return True


class PrivateCluster:
    """A PostgreSQL server of the test's own, in a temporary folder (see module doc)."""

    def __init__(self, *, bindir: Path | None = None) -> None:
        self._bindir = bindir
        self._base: Path | None = None
        self._port: int | None = None
        self._running = False
        self._as_user: dict[str, Any] = {}

    # ---------------------------------------------------------------------- addresses

    @property
    def port(self) -> int:
        """The server's TCP port on 127.0.0.1 (the same across stop and start)."""
        if self._port is None:
            raise RuntimeError("the cluster has not been started")
        return self._port

    @property
    def url(self) -> str:
        """asyncpg SQLAlchemy URL of the ``postgres`` database."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        """asyncpg SQLAlchemy URL of ``database`` on this server."""
        return f"postgresql+asyncpg://{SUPERUSER}@{HOST}:{self.port}/{database}"

    @property
    def running(self) -> bool:
        return self._running

    @property
    def base(self) -> Path:
        """The cluster's folder: ``data/``, ``socket/`` and ``postgres.log``."""
        if self._base is None:
            raise RuntimeError("the cluster has not been created")
        return self._base

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "socket"

    @property
    def log_path(self) -> Path:
        return self.base / "postgres.log"

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's log (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # ---------------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        await self.create()
        try:
            await self._first_start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def create(self) -> None:
        """Find the binaries, make the folder and run ``initdb`` (the server stays down)."""
        if self._base is not None:
            raise RuntimeError("the cluster already exists")
        if self._bindir is None:
            self._bindir = find_server_binaries()
        if self._bindir is None:
            _unavailable(
                f"PostgreSQL server binaries not found ({PG_ROOT}/*/bin/initdb and pg_ctl); "
                "scripts/sysdeps.sh installs Debian's postgresql package when run as root"
            )
        owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam(RUN_AS)
            except KeyError:
                _unavailable(
                    f"running as root and there is no {RUN_AS!r} user to run PostgreSQL as "
                    "(it refuses to run as root)"
                )
            self._as_user = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
        # A short path: the socket's full path must fit in 107 bytes.
        self._base = Path(tempfile.mkdtemp(prefix="absch-pg-"))
        try:
            self.socket_dir.mkdir()
            if owner is not None:
                for path in (self._base, self.socket_dir):
                    os.chown(path, owner.pw_uid, owner.pw_gid)
                if not self._reachable_by(owner):
                    _unavailable(f"{self._base} is not reachable by the {RUN_AS!r} user")
            await self._run(
                "initdb",
                "--pgdata",
                str(self.data_dir),
                "--username",
                SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            )
        except BaseException:
            self._remove()
            raise

    async def start(self) -> None:
        """Start the server on its data folder and port; returns once it accepts connections."""
        if self._running:
            return
        status, output = await self._run(
            "pg_ctl",
            "start",
            "--wait",
            "--pgdata",
            str(self.data_dir),
            "--log",
            str(self.log_path),
            "-o",
            self._server_options(),
            check=False,
        )
        if status != 0:
            raise RuntimeError(
                f"pg_ctl start failed on port {self.port} ({status}):\n{output}\n"
                f"--- {self.log_path}:\n{self.log_tail()}"
            )
        self._running = True

    async def stop(self, mode: StopMode = "fast") -> None:
        """Shut the server down; returns once nothing answers on its port any more."""
        if not self._running:
            return
        status, output = await self._run(
            "pg_ctl",
            "stop",
            "--wait",
            "--timeout",
            str(int(STOP_TIMEOUT)),
            "--pgdata",
            str(self.data_dir),
            "--mode",
            mode,
            check=False,
        )
        if status != 0 and not await self._gone():
            raise RuntimeError(f"pg_ctl stop failed ({status}):\n{output}\n{self.log_tail()}")
        self._running = False
        port = self.port
        await eventually(
            lambda: _refuses_connections(port),
            timeout=STOP_TIMEOUT,
            what=f"port {port} refusing connections after pg_ctl stop",
        )

    async def close(self) -> None:
        """Stop the server (if running) and remove the folder."""
        try:
            if self._running:
                try:
                    await self.stop("fast")
                except (RuntimeError, AssertionError):
                    await self.stop("immediate")  # never leave a server behind
        finally:
            self._remove()

    async def create_database(self, name: str) -> str:
        """Create database ``name`` (lower-case identifier) and return its asyncpg URL."""
        if not _DATABASE_NAME.match(name):
            raise ValueError(f"not a plain lower-case database name: {name!r}")
        engine = create_async_engine(self.url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            await engine.dispose()
        return self.url_for(name)

    # ---------------------------------------------------------------------- internals

    async def _first_start(self) -> None:
        """Start on a free port; another process may take it first, so retry on a new one."""
        for attempt in range(1, START_ATTEMPTS + 1):
            self._port = free_port(HOST)
            try:
                await self.start()
                return
            except RuntimeError:
                if attempt == START_ATTEMPTS or "could not bind" not in self.log_tail():
                    raise

    async def _gone(self) -> bool:
        """No server runs on the data folder (``pg_ctl status`` exits with 3), e.g. one a
        fault test killed."""
        status, _ = await self._run("pg_ctl", "status", "--pgdata", str(self.data_dir), check=False)
        return status == 3

    def _server_options(self) -> str:
        settings = " ".join(f"-c {key}={value}" for key, value in SERVER_SETTINGS.items())
        return f"-p {self.port} -k {self.socket_dir} {settings}"

    def _reachable_by(self, owner: pwd.struct_passwd) -> bool:
        """Every folder above the cluster's lets others (the server's user) pass."""
        return all(
            parent.stat().st_mode & 0o001 or parent.stat().st_uid == owner.pw_uid
            for parent in self.base.parents
        )

    async def _run(self, program: str, *args: str, check: bool = True) -> tuple[int, str]:
        """Run ``<bindir>/<program> <args>`` (as the server's user when root): status, output."""
        assert self._bindir is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        proc = await asyncio.create_subprocess_exec(
            str(self._bindir / program),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=self.base,
            env=env,
            **self._as_user,
        )
        out, _ = await proc.communicate()
        output = out.decode(errors="replace")
        status = proc.returncode if proc.returncode is not None else -1
        if check and status != 0:
            raise RuntimeError(f"{program} {' '.join(args)} failed ({status}):\n{output}")
        return status, output

    def _remove(self) -> None:
        if self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)
            self._base = None
