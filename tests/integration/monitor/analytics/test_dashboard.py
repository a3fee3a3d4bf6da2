"""The operator dashboard's utilization views in a real browser, fed by a real analytics
worker through the monitor's ``GET /v1/utilization``; axe-core checks the section.

Debian's ``chromium`` renders the page (``--dump-dom``, as the case dashboard's test does);
axe-core comes from npm (``npm install -g axe-core``, or ``AXE_CORE_JS`` naming its
``axe.min.js``). Each test skips when what it needs is absent (the browser test never under
CI, which installs Chromium).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.auth import TokenVerifier
from tests.integration.monitor.analytics.harness import resolve_key, token, until_exact, workers
from tests.integration.monitor.analytics.support import Workload, build
from tests.support.browser import render_dom
from tests.support.monitor import running_monitor
from tests.support.poll import eventually

pytestmark = pytest.mark.integration


def _axe_script() -> Path | None:
    """axe-core's ``axe.min.js``: ``AXE_CORE_JS``, else npm's global modules."""
    if named := os.environ.get("AXE_CORE_JS"):
        return Path(named) if Path(named).is_file() else None
    npm = shutil.which("npm")
    if npm is None:
        return None
    root = subprocess.run(
        [npm, "root", "-g"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    found = Path(root) / "axe-core" / "axe.min.js"
    return found if root and found.is_file() else None


NO_CHROMIUM = shutil.which("chromium") is None and not os.environ.get("CI")
needs_chromium = pytest.mark.skipif(
    NO_CHROMIUM, reason="Debian's chromium not installed (CI installs it and never skips)"
)


@dataclass
class Page:
    """The dashboard as rendered for an operator, and what it must show."""

    dom: str
    workload: Workload
    profile: Path


@pytest.fixture
async def page(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, db_url: Any
) -> AsyncIterator[Page]:
    """A monitor and an analytics worker that counted a workload; the page it renders."""
    w = build(seed=41, cpcs=40, amended=4, duplicates=4)
    async with (
        running_monitor(
            kafka=kafka_bootstrap,
            prefix=topic_prefix,
            db=await db_url("monitor"),
            analytics_app_id=f"{topic_prefix}analytics",
        ) as (client, app),
        workers(kafka_bootstrap, topic_prefix, tmp_path) as ws,
    ):
        # Tokens signed by the test's own key, as in test_read_side.
        app.state.verifier = TokenVerifier(resolve_key)
        operator = token("operator")
        await w.produce(kafka_bootstrap, topic_prefix, w.events)
        await until_exact(ws, w)

        async def caught_up() -> bool:
            r = await client.get("/v1/utilization", headers=operator)
            return r.status_code == 200 and r.json()["total"] == w.citations()

        await eventually(caught_up, timeout=30, what="the monitor's view caught up")
        raw = operator["Authorization"].removeprefix("Bearer ")
        url = f"{str(client.base_url).rstrip('/')}/dashboard#token={raw}"
        profile = tmp_path / "chrome-profile"
        dom = await render_dom(url, profile)
        yield Page(dom, w, profile)


def _section(dom: str) -> str:
    found = re.search(r'<section id="utilization".*?</section>', dom, flags=re.S)
    assert found is not None, dom
    return found.group(0)


@needs_chromium
async def test_dashboard_charts_citations_per_provider_and_the_country_matrix(
    page: Page,
) -> None:
    dom, recount = page.dom, page.workload.months()
    assert 'data-utilization="loaded"' in dom, dom
    section = _section(dom)
    assert '<section id="utilization" aria-labelledby="utilization-title">' in section
    assert f"{page.workload.citations()} citations counted" in section

    per_month: Counter[tuple[str, str]] = Counter()
    per_pair: Counter[tuple[str, str]] = Counter()
    for key, month in recount.items():
        provider, at = key.split("|")
        for cell, n in month["cells"].items():
            per_month[(provider, at)] += n
            per_pair[(provider, cell.split("|")[0])] += n
    providers = sorted({p for p, _m in per_month})
    months = sorted({m for _p, m in per_month})

    # One chart per provider country, one bar per month (0 where it has none).
    figures = re.findall(r'<figure data-provider="(\w+)">(.*?)</figure>', section, flags=re.S)
    assert [p for p, _svg in figures] == providers
    for provider, svg in figures:
        bars = re.findall(r'data-month="([\d-]+)" data-citations="(\d+)"', svg)
        assert bars == [(m, str(per_month[(provider, m)])) for m in months], provider
        assert 'role="img"' in svg
        label = re.search(r'aria-label="([^"]+)"', svg)
        assert label is not None
        assert html.unescape(label.group(1)) == f"{provider}: citations per month: " + ", ".join(
            f"{m} {per_month[(provider, m)]}" for m in months
        )

    # The matrix: a header per user country and per provider country, then the totals.
    users = sorted({u for _p, u in per_pair})
    head = re.findall(r'<th scope="col">([^<]+)</th>', section)
    assert head == ["Provider / user", *users, "Total"]
    assert re.findall(r'<th scope="row">([^<]+)</th>', section) == providers
    cells = dict(re.findall(r'<td data-cell="(\w+\|\w+)">(\d+)</td>', section))
    for provider in providers:
        for user in users:
            assert cells.pop(f"{provider}|{user}") == str(per_pair[(provider, user)])
        total = sum(per_pair[(provider, u)] for u in users)
        assert cells.pop(f"{provider}|total") == str(total)
    assert cells == {}


AXE_RUN = """
<script src="axe.min.js"></script>
<script>
axe.run(document.getElementById("utilization")).then((result) => {
  const out = document.createElement("pre");
  out.id = "axe-result";
  out.textContent = JSON.stringify(result.violations.map((v) => ({
    id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(" ")),
  })));
  document.body.append(out);
}, (error) => {
  const out = document.createElement("pre");
  out.id = "axe-result";
  out.textContent = JSON.stringify([{id: "axe failed", impact: String(error), nodes: []}]);
  document.body.append(out);
});
</script>
"""


@needs_chromium
@pytest.mark.skipif(_axe_script() is None, reason="axe-core not installed (npm i -g axe-core)")
async def test_axe_core_finds_no_violation_in_the_utilization_section(
    page: Page, tmp_path: Path
) -> None:
    """axe runs on the page as the browser rendered it (data in, the page's own script out,
    so that nothing refetches from a file URL), with the page's styles for contrast."""
    axe = _axe_script()
    assert axe is not None
    assert 'data-utilization="loaded"' in page.dom, page.dom
    folder = tmp_path / "axe"
    folder.mkdir()
    shutil.copy(axe, folder / "axe.min.js")
    static = re.sub(r"<script>.*?</script>", "", page.dom, flags=re.S)
    static = static.replace("</body>", AXE_RUN + "</body>")
    (folder / "dashboard.html").write_text(static, encoding="utf-8")
    dom = await render_dom((folder / "dashboard.html").as_uri(), page.profile)
    found = re.search(r'<pre id="axe-result">(.*?)</pre>', dom, flags=re.S)
    assert found is not None, dom[-3000:]
    violations = json.loads(html.unescape(found.group(1)))
    assert violations == []
