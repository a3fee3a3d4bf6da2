"""``python -m services.notifier.migrate``: bring its database to this release's schema.

Reads ``NOTIFIER_DATABASE_URL`` like the service; ``--check``, ``--diff`` and
``--autogenerate MESSAGE`` as in ``python -m tools.migrate --help``. Run it before the
service starts (compose's ``notifier-migrate``); the service refuses a database behind it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from services.notifier.migrations import MIGRATIONS
from services.notifier.settings import NotifierSettings
from shared.migrations import main as migrate


def main(argv: Sequence[str] | None = None) -> int:
    """Migrate, check or compare the notifier's database; the exit code says how it went."""
    return migrate(
        {"notifier": (MIGRATIONS, lambda: NotifierSettings().database_url)},
        argv,
        prog="python -m services.notifier.migrate",
    )


if __name__ == "__main__":
    sys.exit(main())
