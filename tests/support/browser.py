"""Pages as Debian's headless Chromium renders them (the dashboard's browser tests)."""

from __future__ import annotations

import asyncio
from pathlib import Path


async def render_dom(url: str, profile: Path) -> str:
    """The DOM headless Chromium renders for ``url`` after its timers ran a while."""
    proc = await asyncio.create_subprocess_exec(
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        # A file:// page (the axe harness) loads the scripts beside it.
        "--allow-file-access-from-files",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    dom = out.decode()
    assert proc.returncode == 0, (url[:200], err.decode()[-3000:])
    assert "</html>" in dom, (url[:200], err.decode()[-3000:])
    return dom
