"""Run the notifier: ``python -m services.notifier.main`` (settings from the environment)."""

from __future__ import annotations

from services.notifier.bootstrap import bootstrap
from services.notifier.settings import NotifierSettings
from shared.runner import serve


def main() -> None:
    """Start the HTTP server with the notifier app."""
    settings = NotifierSettings()
    serve(lambda: bootstrap(settings), settings)


if __name__ == "__main__":
    main()
