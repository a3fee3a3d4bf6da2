"""Checkpoint rules without I/O: who may submit, what a communiqué must cite."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from shared.auth import Principal, Role

CPC_SCHEMA = "absCheckpointCommunique"


class Forbidden(Exception):
    """The caller may not submit for this government or checkpoint."""


def check_can_submit(principal: Principal, government: str, checkpoints: list[str]) -> None:
    """Operators of a cited checkpoint, or the PA/NAU of the CPC's government."""
    if principal.role is Role.CHECKPOINT:
        if principal.government != government:
            raise Forbidden("checkpoint operators submit for their own government only")
        if principal.checkpoint not in checkpoints:
            raise Forbidden("the communiqué must cite your checkpoint")
        return
    if principal.role in {Role.PA, Role.NAU} and principal.government == government:
        return
    raise Forbidden(f"role {principal.role.value} cannot submit communiqués for {government}")


def body_hash(body: dict[str, Any]) -> str:
    """Stable digest of a JSON body (key order does not matter)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def for_publication(record: dict[str, Any]) -> dict[str, Any]:
    """Editors' private notes never leave the service."""
    return {k: v for k, v in record.items() if k != "notes"}
