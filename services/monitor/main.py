"""Run the monitor: ``python -m services.monitor.main`` (settings from the environment)."""

from __future__ import annotations

from services.monitor.bootstrap import bootstrap
from services.monitor.settings import MonitorSettings
from shared.runner import serve


def main() -> None:
    """Start the HTTP server with the monitor app."""
    settings = MonitorSettings()
    serve(lambda: bootstrap(settings), settings)


if __name__ == "__main__":
    main()
