"""``python -m services.registry.migrate``: bring its database to this release's schema.

Reads ``REGISTRY_DATABASE_URL`` like the service; ``--check``, ``--diff`` and
``--autogenerate MESSAGE`` as in ``python -m tools.migrate --help``. Run it before the
service starts (compose's ``registry-migrate``); the service refuses a database behind it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from services.registry.migrations import MIGRATIONS
from services.registry.settings import RegistrySettings
from shared.migrations import main as migrate


def main(argv: Sequence[str] | None = None) -> int:
    """Migrate, check or compare the registry's database; the exit code says how it went."""
    return migrate(
        {"registry": (MIGRATIONS, lambda: RegistrySettings().database_url)},
        argv,
        prog="python -m services.registry.migrate",
    )


if __name__ == "__main__":
    sys.exit(main())
