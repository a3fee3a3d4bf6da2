"""What the authorization tests share: the caller's roles, the matrix format, problems.

A matrix is a text table: a header of roles, then one row per endpoint whose cells read
``own/other``, the expected answer when the target belongs to the caller's government
(``mx``) and when it belongs to another (``br``). For the admin, who belongs to no
government, "own" and "other" are simply the two governments.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

PROBLEM_JSON = "application/problem+json"
OWN, OTHER = "mx", "br"
SIDES = {"own": OWN, "other": OTHER}
ROLES = ("admin", "nfp", "pa", "nau", "cna", "checkpoint")


def matrix_cells(matrix: str) -> list[Any]:
    """One ``pytest.param(endpoint, role, side, expected)`` per cell of ``matrix``."""
    header, *rows = matrix.strip().splitlines()
    assert tuple(header.split()) == ROLES
    cells = []
    for row in rows:
        endpoint, *columns = row.split()
        assert len(columns) == len(ROLES), row
        for role, column in zip(ROLES, columns, strict=True):
            for side, expected in zip(SIDES, column.split("/"), strict=True):
                cells.append(
                    pytest.param(endpoint, role, side, expected, id=f"{role}-{endpoint}-{side}")
                )
    return cells


def assert_problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    """``resp`` is an RFC 9457 problem with ``status``; returns its body."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    assert body["title"]
    return body
