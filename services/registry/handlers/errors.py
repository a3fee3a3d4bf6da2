"""Errors raised by registry handlers (mapped to problem+json by the API)."""

from __future__ import annotations


class NotFound(Exception):
    """No such record, revision, request or user (or not visible to the caller)."""


class Conflict(Exception):
    """The record's state does not allow the action (locked, revoked, nothing to publish)."""


class InvalidRecord(Exception):
    """A record failed validation; ``errors`` lists ``{"field", "message"}`` items, with the
    ABSCH ``code`` too when the field is a record's (``services.registry.codes``)."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


class Unauthenticated(Exception):
    """A credential given in a body (not a bearer token) authenticates nobody; ``field``
    names it."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field
