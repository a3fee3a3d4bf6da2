"""Fixtures of the registry's integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.registry import MxRegistry, registry_with_cna


@pytest.fixture
async def mx_registry(
    kafka_bootstrap: str, topic_prefix: str, db_url: Any, tmp_path: Path
) -> AsyncIterator[MxRegistry]:
    """A registry (on each database) with Mexico's users by role and a published CNA."""
    async with registry_with_cna(kafka_bootstrap, topic_prefix, db_url, tmp_path) as found:
        yield found
