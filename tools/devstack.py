"""Run the whole system locally: embedded broker, SMTP sink, four services, the
utilization analytics worker, demo data.

Usage: ``python -m tools.devstack [--no-demo] [--keep]`` (``make up`` does this). State
lives in ``var/dev/`` and is wiped at start, since the embedded broker keeps nothing
across restarts. Stop with Ctrl-C: every process gets SIGTERM and shuts down cleanly.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from honcho.manager import Manager

from tools.demo import load_demo
from tools.ports import free_port, wait_for_port

log = logging.getLogger("devstack")
SERVICES = {"registry": 8101, "checkpoint": 8102, "notifier": 8103, "monitor": 8104}
# Each service's Prometheus listener, apart from its public port (the settings' defaults).
METRICS = {"registry": 9101, "checkpoint": 9102, "notifier": 9103, "monitor": 9104}
# The analytics worker's faust web server: /metrics and /utilization/local (ADR 0004).
ANALYTICS_PORT = 6066


def _env(state: Path, broker_port: int, smtp_port: int, admin_token: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "ABSCH_ENV": "dev",
            "KAFKA_BOOTSTRAP": f"127.0.0.1:{broker_port}",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp_port),
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{SERVICES['registry']}",
            "JWKS_URL": f"http://127.0.0.1:{SERVICES['registry']}/.well-known/jwks.json",
            "ABSCH_ADMIN_TOKEN": admin_token,
            "LOG_FORMAT": "text",
            "LOG_LEVEL": env.get("LOG_LEVEL", "INFO"),
            "JWT_PRIVATE_KEY_PATH": str(state / "keys" / "registry-ed25519.pem"),
            "PYTHONUNBUFFERED": "1",
            "ANALYTICS_WEB_PORT": str(ANALYTICS_PORT),
            "ANALYTICS_DATA_DIR": str(state / "analytics"),
            "ANALYTICS_STORE": "memory://",
        }
    )
    for name, port in SERVICES.items():
        env[f"{name.upper()}_DATABASE_URL"] = f"sqlite+aiosqlite:///{state / f'{name}.db'}"
        env[f"{name.upper()}_HTTP_PORT"] = str(port)
        env[f"{name.upper()}_METRICS_PORT"] = str(METRICS[name])
    return env


def health_urls() -> dict[str, str]:
    """What answers 200 once each process is up: the services' readiness, the analytics
    worker's metrics (faust has no readiness page; its web server starts with the worker)."""
    urls = {name: f"http://127.0.0.1:{port}/readyz" for name, port in SERVICES.items()}
    urls["analytics"] = f"http://127.0.0.1:{ANALYTICS_PORT}/metrics"
    return urls


def _wait_healthy(started: float, timeout: float = 90.0) -> bool:
    deadline = time.monotonic() + timeout
    pending = health_urls()
    with httpx.Client(timeout=2.0) as client:
        while pending and time.monotonic() < deadline:
            for name, url in list(pending.items()):
                try:
                    if client.get(url).status_code == 200:
                        pending.pop(name)
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
    if pending:
        log.error("not ready after %.0fs: %s", timeout, ", ".join(pending))
        return False
    log.info("four services and analytics ready %.1fs after start", time.monotonic() - started)
    return True


def _after_start(state: Path, admin_token: str, demo: bool, started: float) -> None:
    if not _wait_healthy(started):
        return
    lines = [f"  {name:<10} http://127.0.0.1:{port}/docs" for name, port in SERVICES.items()]
    lines.append(f"  analytics  http://127.0.0.1:{ANALYTICS_PORT}/utilization/local (worker)")
    lines.append(f"  dashboard  http://127.0.0.1:{SERVICES['monitor']}/dashboard (admin token)")
    lines += [f"  metrics    http://127.0.0.1:{p}/metrics ({name})" for name, p in METRICS.items()]
    lines.append(f"  metrics    http://127.0.0.1:{ANALYTICS_PORT}/metrics (analytics)")
    lines.append(f"  mail files {state / 'mail'}/*.eml")
    lines.append(f"  admin token in {state / 'admin-token'}")
    if demo:
        try:
            summary = load_demo(
                f"http://127.0.0.1:{SERVICES['registry']}",
                f"http://127.0.0.1:{SERVICES['checkpoint']}",
                admin_token,
            )
            lines += [f"  demo: {k} {v}" for k, v in summary.items()]
            mails = _wait_for_mail(state / "mail", timeout=30)
            lines.append(f"  demo mails written so far: {mails}")
        except Exception:  # keep the stack running; the log says what failed
            log.exception("demo data failed to load")
    log.info("absch-monitor is running (Ctrl-C to stop):\n%s", "\n".join(lines))


def _wait_for_mail(folder: Path, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not list(folder.glob("*.eml")):
        time.sleep(0.2)
    return len(list(folder.glob("*.eml")))


def run_analytics(broker_port: int, timeout: float = 60.0) -> None:
    """Become the analytics worker once the broker listens: the worker creates its topics
    once at start and exits when the broker is not there yet, which would stop the stack.
    ``exec`` so that the supervisor's SIGTERM reaches faust's own shutdown."""
    wait_for_port("127.0.0.1", broker_port, timeout)
    command = [sys.executable, "-m", "services.monitor.analytics"]
    os.execv(sys.executable, command)  # noqa: S606 - fixed argv, no shell wanted


def main(argv: list[str] | None = None) -> int:
    """Start everything and supervise it until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-demo", action="store_true", help="do not load demo data")
    parser.add_argument("--keep", action="store_true", help="keep var/dev from the last run")
    parser.add_argument("--broker-port", type=int, default=int(os.environ.get("BROKER_PORT", 0)))
    parser.add_argument("--smtp-port", type=int, default=int(os.environ.get("SMTP_SINK_PORT", 0)))
    parser.add_argument("--analytics", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.analytics:  # the stack's own analytics process (below), not for users
        run_analytics(args.broker_port)
        return 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s devstack: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    state = Path("var/dev").resolve()
    if state.exists() and not args.keep:
        shutil.rmtree(state)
    (state / "mail").mkdir(parents=True, exist_ok=True)
    token_file = state / "admin-token"
    admin_token = token_file.read_text() if token_file.exists() else secrets.token_urlsafe(24)
    token_file.write_text(admin_token)
    broker_port = args.broker_port or free_port()
    smtp_port = args.smtp_port or free_port()
    env = _env(state, broker_port, smtp_port, admin_token)
    py = sys.executable
    # The services refuse to start on a database behind their schema: migrate all four
    # first, as compose's one-shot <name>-migrate services do (a kept var/dev is upgraded).
    if subprocess.run([py, "-m", "tools.migrate", "--all"], env=env, check=False).returncode:
        log.error("migrations failed; nothing started")
        return 1
    manager = Manager()
    manager.add_process("broker", f"{py} -m tools.broker --port {broker_port}", env=env)
    manager.add_process(
        "smtp", f"{py} -m tools.smtp_sink --port {smtp_port} --dir {state / 'mail'}", env=env
    )
    for name in SERVICES:
        manager.add_process(name, f"{py} -m services.{name}.main", env=env)
    manager.add_process(
        "analytics", f"{py} -m tools.devstack --analytics --broker-port {broker_port}", env=env
    )
    started = time.monotonic()
    threading.Thread(
        target=_after_start, args=(state, admin_token, not args.no_demo, started), daemon=True
    ).start()
    manager.loop()
    return int(manager.returncode or 0)


if __name__ == "__main__":
    sys.exit(main())
