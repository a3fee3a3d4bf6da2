"""The problem document each refusal of a registry handler answers with."""

from __future__ import annotations

from services.registry.domain import Forbidden, RuleViolation
from services.registry.handlers.errors import Conflict, InvalidRecord, NotFound, Unauthenticated
from shared.http import FieldProblem, Problem, ValidationIssue

# What a handler raises to refuse one request (or one item of a batch).
REFUSALS: tuple[type[Exception], ...] = (
    NotFound,
    Conflict,
    Forbidden,
    Unauthenticated,
    InvalidRecord,
    RuleViolation,
)


def problem_for(exc: Exception) -> Problem:
    """The problem+json body for a refusal in :data:`REFUSALS`."""
    if isinstance(exc, NotFound):
        return Problem(title="Not Found", status=404, detail=str(exc))
    if isinstance(exc, Conflict):
        return Problem(title="Conflict", status=409, detail=str(exc))
    if isinstance(exc, Forbidden):
        return Problem(title="Forbidden", status=403, detail=str(exc))
    if isinstance(exc, Unauthenticated):
        errors = [FieldProblem(field=exc.field, message=str(exc))]
        return Problem(title="Unauthorized", status=401, detail=str(exc), errors=errors)
    if isinstance(exc, InvalidRecord):
        fields = [FieldProblem(field=e["field"], message=e["message"]) for e in exc.errors]
        # A record's failures also read as the clearing-house's validation report does.
        codes = [
            ValidationIssue(code=e["code"], property=e["field"]) for e in exc.errors if "code" in e
        ]
        return Problem(
            title="Unprocessable Content",
            status=422,
            detail=str(exc),
            errors=fields,
            validation=codes or None,
        )
    if isinstance(exc, RuleViolation):
        return Problem(
            title="Unprocessable Content",
            status=exc.status,
            detail=str(exc),
            errors=[FieldProblem(field=exc.field, message=str(exc))] if exc.field else None,
        )
    raise TypeError(f"{type(exc).__name__} is not a registry refusal")
