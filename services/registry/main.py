"""Run the registry: ``python -m services.registry.main`` (settings from the environment)."""

from __future__ import annotations

from services.registry.bootstrap import bootstrap
from services.registry.settings import RegistrySettings
from shared.runner import serve


def main() -> None:
    """Start the HTTP server with the registry app."""
    settings = RegistrySettings()
    serve(lambda: bootstrap(settings), settings)


if __name__ == "__main__":
    main()
