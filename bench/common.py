"""Shared helpers: progress lines, statistics, result tables, /proc sampling."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_T0 = time.monotonic()
CLK_TCK = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "bench"


def postgres_url() -> str | None:
    """The PostgreSQL server benchmarks may create scratch databases on, if any."""
    return os.environ.get("BENCH_PG_URL") or os.environ.get("DATABASE_URL_TEST_PG")


def progress(msg: str) -> None:
    """One progress line on stderr, with the time since the run started."""
    sys.stderr.write(f"[bench {time.monotonic() - _T0:7.1f}s] {msg}\n")
    sys.stderr.flush()


def out(text: str = "") -> None:
    """A line of results on stdout."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------- statistics


def pct(values: Sequence[float], p: float) -> float | None:
    """Percentile ``p`` (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    data = sorted(values)
    k = (len(data) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def median(values: Iterable[float]) -> float | None:
    data = list(values)
    return statistics.median(data) if data else None


def fmt(value: Any, unit: str = "") -> str:
    """Human formatting for table cells."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        a = abs(value)
        if a >= 1000:
            text = f"{value:,.0f}"
        elif a >= 100:
            text = f"{value:.0f}"
        elif a >= 10:
            text = f"{value:.1f}"
        elif a >= 1:
            text = f"{value:.2f}"
        elif a == 0:
            text = "0"
        else:
            text = f"{value:.3g}"
        return text + unit
    return f"{value}{unit}"


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def mib(nbytes: float | None) -> float | None:
    return None if nbytes is None else nbytes / (1024 * 1024)


# --------------------------------------------------------------------------- tables


@dataclass
class Table:
    """A result table: printed as text, stored as JSON."""

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: Any) -> None:
        self.rows.append(list(cells))

    def render(self) -> str:
        cells = [[fmt(c) for c in row] for row in self.rows]
        widths = [len(c) for c in self.columns]
        for row in cells:
            for i, c in enumerate(row):
                widths[i] = max(widths[i], len(c))

        def line(items: Sequence[str]) -> str:
            out = []
            for i, c in enumerate(items):
                out.append(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]))
            return "| " + " | ".join(out) + " |"

        text = [f"### {self.title}", "", line(self.columns)]
        text.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        text += [line(r) for r in cells]
        for note in self.notes:
            text.append(f"  note: {note}")
        return "\n".join(text)

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": self.columns,
            "rows": self.rows,
            "notes": self.notes,
        }


@dataclass
class Outcome:
    """What one benchmark produced: tables for people, numbers for the summary."""

    name: str
    tables: list[Table] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None


# --------------------------------------------------------------------------- /proc


def rss_bytes(pid: int) -> int | None:
    """VmRSS of a process from /proc/<pid>/status."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all threads), in seconds."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    first = Path("/proc/stat").read_text().split("\n", 1)[0]
    parts = [int(x) for x in first.split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return float(sum(parts) - idle), float(sum(parts))


@dataclass
class Window:
    """Per process: RSS samples and CPU time over a measurement window."""

    started: float
    cpu0: dict[str, float | None]
    machine0: tuple[float, float]
    rss: dict[str, list[int]] = field(default_factory=dict)
    cpu_pct: dict[str, float | None] = field(default_factory=dict)
    machine_pct: float | None = None
    wall: float = 0.0

    def summary(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, samples in self.rss.items():
            out[name] = {
                "rss_max": max(samples) if samples else None,
                "rss_mean": statistics.fmean(samples) if samples else None,
                "rss_last": samples[-1] if samples else None,
                "cpu_pct": self.cpu_pct.get(name),
            }
        return out


class ProcSampler:
    """Samples VmRSS of named processes every ``interval`` seconds; measures CPU windows."""

    def __init__(self, pids: dict[str, int], interval: float = 0.5) -> None:
        self.pids = dict(pids)
        self.interval = interval
        self._windows: list[Window] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def snapshot(self) -> dict[str, int | None]:
        return {name: rss_bytes(pid) for name, pid in self.pids.items()}

    def open(self) -> Window:
        w = Window(
            started=time.monotonic(),
            cpu0={n: cpu_seconds(p) for n, p in self.pids.items()},
            machine0=machine_cpu(),
            rss={n: [] for n in self.pids},
        )
        self._sample(w)
        self._windows.append(w)
        return w

    def close(self, w: Window) -> Window:
        self._sample(w)
        w.wall = time.monotonic() - w.started
        for name, pid in self.pids.items():
            c0, c1 = w.cpu0.get(name), cpu_seconds(pid)
            w.cpu_pct[name] = (
                None if c0 is None or c1 is None or w.wall <= 0 else 100.0 * (c1 - c0) / w.wall
            )
        busy0, total0 = w.machine0
        busy1, total1 = machine_cpu()
        if total1 > total0:
            # percent of ONE core, like the per-process figures (200% = both cores busy)
            w.machine_pct = 100.0 * os.cpu_count() * (busy1 - busy0) / (total1 - total0)  # type: ignore[operator]
        if w in self._windows:
            self._windows.remove(w)
        return w

    def _sample(self, w: Window) -> None:
        for name, pid in self.pids.items():
            value = rss_bytes(pid)
            if value is not None:
                w.rss.setdefault(name, []).append(value)

    async def _run(self) -> None:
        while True:
            for w in list(self._windows):
                self._sample(w)
            await asyncio.sleep(self.interval)


def _tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants (from /proc/*/stat parent ids)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += parents.get(pid, [])
    return out


class LoadMeter:
    """CPU of the whole machine vs. this benchmark's process tree over a window.

    Other sessions may run tests on the same machine at the same time; ``other_pct`` is
    what they took (percent of one core, 200% = both cores), so a figure taken while it was
    high can be read with that in mind.
    """

    def __init__(self) -> None:
        self._m0 = machine_cpu()
        self._own0 = self._own()
        self._t0 = time.monotonic()

    @staticmethod
    def _own() -> dict[int, float]:
        return {p: c for p in _tree_pids(os.getpid()) if (c := cpu_seconds(p)) is not None}

    def stop(self) -> dict[str, float | None]:
        wall = time.monotonic() - self._t0
        if wall < 0.5:
            return {"machine_pct": None, "own_pct": None, "other_pct": None, "wall_s": wall}
        busy0, total0 = self._m0
        busy1, total1 = machine_cpu()
        machine = (
            100.0 * (os.cpu_count() or 1) * (busy1 - busy0) / (total1 - total0)
            if total1 > total0
            else None
        )
        own1 = self._own()
        # processes that ended in the window are lost; new ones count from zero
        own = sum(c - self._own0.get(p, 0.0) for p, c in own1.items())
        own_pct = 100.0 * own / wall if wall > 0 else None
        other = None if machine is None or own_pct is None else max(0.0, machine - own_pct)
        return {"machine_pct": machine, "own_pct": own_pct, "other_pct": other, "wall_s": wall}


class QuietGate:
    """Waits (bounded) until other processes on the machine leave the CPU mostly idle.

    Each call waits at most ``max_wait`` seconds and all calls together at most ``budget``;
    after that measurements go ahead and their load notes tell how busy the machine was.
    """

    def __init__(self, max_wait: float, budget: float, threshold: float = 40.0) -> None:
        self.max_wait, self.budget, self.threshold = max_wait, budget, threshold
        self.waited = 0.0

    async def __call__(self, what: str) -> float | None:
        start = time.monotonic()
        other = None
        while True:
            meter = LoadMeter()
            await asyncio.sleep(1.0)
            other = meter.stop().get("other_pct")
            spent = time.monotonic() - start
            if other is None or other < self.threshold:
                break
            if spent >= self.max_wait or self.waited + spent >= self.budget:
                progress(
                    f"machine still busy ({other:.0f}% of one core by other processes); "
                    f"measuring {what} anyway"
                )
                break
            if spent < 1.5:
                progress(
                    f"waiting for other processes to quieten ({other:.0f}% of one core) "
                    f"before {what}"
                )
        self.waited += time.monotonic() - start
        return other


def load_note(load: dict[str, float | None]) -> str:
    return (
        f"machine CPU during the measurement: {fmt(load.get('machine_pct'))}% of one core, "
        f"this benchmark's processes {fmt(load.get('own_pct'))}%, other processes on the "
        f"machine {fmt(load.get('other_pct'))}% (2 cores = 200%)"
    )


def write_json(path: Path, payload: Any) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)
