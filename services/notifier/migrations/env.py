"""Alembic runs this for the notifier's migrations; :mod:`shared.migrations` does the work."""

from shared.migrations import run_environment

run_environment()
