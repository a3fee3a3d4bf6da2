"""py-spy sampling of running service processes, summarised as text.

``record`` runs one ``py-spy record --format raw --nonblocking --gil`` per process for the
same window. ``--gil`` keeps only samples of the thread holding the GIL: the Python work of
the event loop (and of aiosqlite's threads while they hold it), without the idle waits that
py-spy's idle heuristic misses in nonblocking mode (epoll, aiosqlite's queue); native work
done with the GIL released (SQLite's C code, socket syscalls) is not counted. So samples /
(rate x seconds) ~ the share of time the process ran Python code. ``summarise`` reads the
collapsed stacks: self time by package, inclusive time of project functions (``services/``,
``shared/``) and the hottest self frames.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import Table

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")

PACKAGES = [
    ("services/", None),  # project code: reported by module below
    ("shared/", None),
    ("sqlalchemy", "sqlalchemy"),
    ("aiosqlite", "aiosqlite (thread hand-off)"),
    ("sqlite3", "sqlite3"),
    ("pydantic", "pydantic"),
    ("aiokafka", "aiokafka"),
    ("kafka/", "aiokafka"),
    ("starlette", "starlette/fastapi"),
    ("fastapi", "starlette/fastapi"),
    ("uvicorn", "uvicorn/h11/httptools"),
    ("h11", "uvicorn/h11/httptools"),
    ("httptools", "uvicorn/h11/httptools"),
    ("jinja2", "jinja2"),
    ("markupsafe", "jinja2"),
    ("email/", "email (stdlib)"),
    ("aiosmtplib", "aiosmtplib"),
    ("jwt/", "pyjwt/cryptography"),
    ("cryptography", "pyjwt/cryptography"),
    ("prometheus_client", "prometheus_client"),
    ("logging", "logging"),
    ("pythonjsonlogger", "logging"),
    ("json/", "json (stdlib)"),
    ("tenacity", "tenacity"),
    ("anyio", "anyio"),
    ("asyncio", "asyncio"),
    ("httpx", "httpx"),
    ("copy.py", "copy (stdlib)"),
    ("uuid.py", "uuid (stdlib)"),
]


def pyspy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


async def record(
    pids: dict[str, int], seconds: float, out: Path, rate: int = 100
) -> dict[str, Path]:
    """Sample every process for ``seconds``; returns the raw output file per name."""
    exe = pyspy()
    if exe is None:
        raise RuntimeError("py-spy not found (pip install py-spy)")
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    procs = {}
    files = {}
    for name, pid in pids.items():
        path = out / f"{name}.folded"
        files[name] = path
        procs[name] = await asyncio.create_subprocess_exec(
            exe,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--nonblocking",
            "--gil",
            "--output",
            str(path),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
    for name, proc in procs.items():
        _, err = await proc.communicate()
        if proc.returncode != 0 and not files[name].exists():
            raise RuntimeError(f"py-spy on {name}: {err.decode(errors='replace')[-500:]}")
    return files


def _parse(line: str) -> tuple[list[tuple[str, str]], int] | None:
    head, _, count = line.rpartition(" ")
    if not head or not count.isdigit():
        return None
    frames = []
    for raw in head.split(";"):
        m = _FRAME.match(raw.strip())
        if m:
            frames.append((m.group("func"), m.group("file")))
        else:
            frames.append((raw.strip(), ""))
    return frames, int(count)


def _package(path: str) -> str:
    for needle, label in PACKAGES:
        if needle in path:
            if label is None:
                idx = path.find(needle)
                return path[idx:].removesuffix(".py")
            return label
    if "site-packages" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0]
    return "python (other stdlib)" if path else "native/other"


_ENTRY = ("/main.py", "shared/runner.py")  # frames every sample of the loop shares


def _project(path: str) -> str | None:
    for root in ("services/", "shared/"):
        idx = path.find(root)
        if idx >= 0 and "site-packages" not in path and not path.endswith(_ENTRY):
            return path[idx:]
    return None


def summarise(path: Path, top: int = 10) -> dict[str, Any]:
    """Self time by package, project functions' inclusive time, hottest self frames."""
    total = 0
    by_package: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    self_frames: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        parsed = _parse(line)
        if parsed is None:
            continue
        frames, count = parsed
        if not frames:
            continue
        total += count
        func, file = frames[-1]
        by_package[_package(file)] += count
        self_frames[f"{file.rsplit('site-packages/', 1)[-1]}:{func}"] += count
        seen = set()
        for func, file in frames:
            project = _project(file)
            if project is not None:
                key = f"{project}:{func}"
                if key not in seen:
                    seen.add(key)
                    inclusive[key] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(k, 100.0 * v / total) for k, v in counter.most_common(top)] if total else []

    return {
        "samples": total,
        "self_by_package": share(by_package),
        "project_inclusive": share(inclusive),
        "self_frames": share(self_frames),
    }


def tables(summaries: dict[str, dict[str, Any]], seconds: float, rate: int) -> list[Table]:
    out = []
    for name, s in summaries.items():
        t = Table(
            f"profile: {name} ({s['samples']:,} GIL-holding samples in {seconds:.0f}s at "
            f"{rate} Hz: Python ran ~{s['samples'] / max(seconds, 1) / rate * 100:.0f}% of the "
            "time)",
            ["rank", "self time by package", "%", "project function (inclusive)", "%"],
        )
        a, b = s["self_by_package"], s["project_inclusive"]
        for i in range(max(len(a), len(b))):
            pa = a[i] if i < len(a) else ("", None)
            pb = b[i] if i < len(b) else ("", None)
            t.add(i + 1, pa[0], pa[1], pb[0], pb[1])
        hot = ", ".join(f"{k} {v:.1f}%" for k, v in s["self_frames"][:6])
        t.notes.append(f"hottest self frames: {hot}")
        out.append(t)
    return out
