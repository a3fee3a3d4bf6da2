"""Bring every service's database to this release's schema: ``python -m tools.migrate --all``.

Each service's URL comes from its settings (``REGISTRY_DATABASE_URL`` and so on), as when
the service starts. ``python -m tools.migrate registry notifier`` picks services;
``--check`` changes nothing and exits 1 unless every database is at head; ``--diff``
compares the models with the migrations (the CI drift check); ``--autogenerate MESSAGE``
writes the next revision of each service whose models changed (review it). See
docs/operations.md, "Upgrading".
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from importlib import import_module

from shared.migrations import Migrations, Target, Upgrade
from shared.migrations import main as migrate
from shared.settings import ServiceSettings

SERVICES = ("registry", "checkpoint", "notifier", "monitor")
_SETTINGS = {
    "registry": "RegistrySettings",
    "checkpoint": "CheckpointSettings",
    "notifier": "NotifierSettings",
    "monitor": "MonitorSettings",
}


def migrations(service: str) -> Migrations:
    """The migrations of ``service`` (``services/<service>/migrations``)."""
    found: Migrations = import_module(f"services.{service}.migrations").MIGRATIONS
    return found


def settings_url(service: str) -> Callable[[], str]:
    """Reads the service's database URL from its settings (the environment) when called."""

    def url() -> str:
        module = import_module(f"services.{service}.settings")
        settings: ServiceSettings = getattr(module, _SETTINGS[service])()
        return settings.database_url

    return url


async def upgrade(service: str, url: str) -> Upgrade:
    """Bring ``service``'s database at ``url`` to head (what the tests and benchmarks run
    before they start a service, like compose's one-shot ``<service>-migrate``)."""
    return await migrations(service).upgrade(url)


def main(argv: Sequence[str] | None = None) -> int:
    """Migrate, check or compare the chosen services' databases (all by default)."""
    targets: dict[str, Target] = {name: (migrations(name), settings_url(name)) for name in SERVICES}
    return migrate(targets, argv, prog="python -m tools.migrate")


if __name__ == "__main__":
    sys.exit(main())
