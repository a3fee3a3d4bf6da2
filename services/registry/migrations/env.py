"""Alembic runs this for the registry's migrations; :mod:`shared.migrations` does the work."""

from shared.migrations import run_environment

run_environment()
