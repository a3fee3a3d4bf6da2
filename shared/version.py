"""The release this code is (``version`` in pyproject.toml, as installed)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "absch-monitor"


def release() -> str:
    """The installed distribution's version; ``0+unknown`` when run from a bare tree."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"


VERSION = release()
