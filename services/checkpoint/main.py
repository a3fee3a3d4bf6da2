"""Run the checkpoint service: ``python -m services.checkpoint.main`` (settings from env)."""

from __future__ import annotations

from services.checkpoint.bootstrap import bootstrap
from services.checkpoint.settings import CheckpointSettings
from shared.runner import serve


def main() -> None:
    """Start the HTTP server with the checkpoint app."""
    settings = CheckpointSettings()
    serve(lambda: bootstrap(settings), settings)


if __name__ == "__main__":
    main()
