"""``python -m services.monitor.migrate``: bring its database to this release's schema.

Reads ``MONITOR_DATABASE_URL`` like the service; ``--check``, ``--diff`` and
``--autogenerate MESSAGE`` as in ``python -m tools.migrate --help``. Run it before the
service starts (compose's ``monitor-migrate``); the service refuses a database behind it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from services.monitor.migrations import MIGRATIONS
from services.monitor.settings import MonitorSettings
from shared.migrations import main as migrate


def main(argv: Sequence[str] | None = None) -> int:
    """Migrate, check or compare the monitor's database; the exit code says how it went."""
    return migrate(
        {"monitor": (MIGRATIONS, lambda: MonitorSettings().database_url)},
        argv,
        prog="python -m services.monitor.migrate",
    )


if __name__ == "__main__":
    sys.exit(main())
