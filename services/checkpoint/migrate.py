"""``python -m services.checkpoint.migrate``: bring its database to this release's schema.

Reads ``CHECKPOINT_DATABASE_URL`` like the service; ``--check``, ``--diff`` and
``--autogenerate MESSAGE`` as in ``python -m tools.migrate --help``. Run it before the
service starts (compose's ``checkpoint-migrate``); the service refuses a database behind it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from services.checkpoint.migrations import MIGRATIONS
from services.checkpoint.settings import CheckpointSettings
from shared.migrations import main as migrate


def main(argv: Sequence[str] | None = None) -> int:
    """Migrate, check or compare the checkpoint's database; the exit code says how it went."""
    return migrate(
        {"checkpoint": (MIGRATIONS, lambda: CheckpointSettings().database_url)},
        argv,
        prog="python -m services.checkpoint.migrate",
    )


if __name__ == "__main__":
    sys.exit(main())
