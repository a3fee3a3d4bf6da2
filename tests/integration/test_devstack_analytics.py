"""``make up`` (``tools/devstack.py``) runs the analytics worker beside the services.

The whole stack binds fixed ports (8101-8104, 9101-9104, 6066), which a developer's running
stack or a parallel test would hold, so the launcher is tested on its own: the devstack's
environment, with free ports, and its analytics process on the session's broker.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.monitor.analytics.app import LOCAL_VIEW
from tests.support.poll import eventually
from tools import devstack
from tools.ports import free_port

pytestmark = pytest.mark.integration


def test_the_worker_shares_the_services_broker_and_keeps_its_data_in_the_state_folder(
    tmp_path: Path,
) -> None:
    env = devstack._env(tmp_path, broker_port=1234, smtp_port=25, admin_token="t")
    assert env["KAFKA_BOOTSTRAP"] == "127.0.0.1:1234"
    assert env["ANALYTICS_WEB_PORT"] == str(devstack.ANALYTICS_PORT)
    assert Path(env["ANALYTICS_DATA_DIR"]).parent == tmp_path
    assert env["ANALYTICS_STORE"] == "memory://"
    taken = set(devstack.SERVICES.values()) | set(devstack.METRICS.values())
    assert devstack.ANALYTICS_PORT not in taken
    urls = devstack.health_urls()
    assert urls["analytics"] == f"http://127.0.0.1:{devstack.ANALYTICS_PORT}/metrics"
    assert set(urls) == {*devstack.SERVICES, "analytics"}


@pytest.fixture
def analytics(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[int]:
    """The devstack's analytics process on the session's broker; yields its web port."""
    host, _, port = kafka_bootstrap.rpartition(":")
    if host not in ("127.0.0.1", "localhost") or "," in kafka_bootstrap:
        pytest.skip("the devstack runs its own broker on loopback")
    env = devstack._env(tmp_path, broker_port=int(port), smtp_port=free_port(), admin_token="t")
    web = free_port()
    env |= {
        "KAFKA_TOPIC_PREFIX": topic_prefix,
        "ANALYTICS_APP_ID": f"{topic_prefix}analytics",
        "ANALYTICS_WEB_PORT": str(web),
    }
    log = (tmp_path / "analytics.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.devstack", "--analytics", "--broker-port", port],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield web
    finally:
        # What the supervisor does on Ctrl-C: SIGTERM, which faust itself handles (exec).
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("the analytics worker ignored SIGTERM") from None
        finally:
            log.close()


async def test_the_devstack_analytics_process_comes_up_on_the_broker(
    analytics: int, tmp_path: Path
) -> None:
    base = f"http://127.0.0.1:{analytics}"

    async def assigned() -> bool:
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                metrics = await client.get(f"{base}/metrics")
                local = await client.get(f"{base}{LOCAL_VIEW}")
        except httpx.HTTPError:
            return False
        return metrics.status_code == 200 and bool(
            local.status_code == 200 and local.json()["partitions"]
        )

    await eventually(assigned, timeout=90, what="the analytics worker owns partitions")
    assert (tmp_path / "analytics").is_dir()  # faust's data dir, under the state folder
