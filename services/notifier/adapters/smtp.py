"""SMTP delivery over one reused connection (aiosmtplib)."""

from __future__ import annotations

import asyncio
import logging
from email.message import Message

import aiosmtplib

log = logging.getLogger(__name__)


class TemporaryFailure(Exception):
    """Try again later (4xx, connection refused or dropped, timeout)."""


class PermanentFailure(Exception):
    """The server refused for good (5xx)."""


class SmtpMailer:
    """Keeps one SMTP connection open and reconnects when it drops."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self._host, self._port = host, port
        self._username, self._password = username, password
        self._starttls = starttls
        self._timeout = timeout
        self._client: aiosmtplib.SMTP | None = None
        self._lock = asyncio.Lock()

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self._host, port=self._port, timeout=self._timeout, start_tls=self._starttls
        )
        await client.connect()
        if self._username and self._password:
            await client.login(self._username, self._password)
        return client

    async def send(self, message: Message) -> None:
        """Send one message; classify any failure as temporary or permanent."""
        async with self._lock:
            try:
                if self._client is None or not self._client.is_connected:
                    self._client = await self._connect()
                errors, _ = await self._client.send_message(message)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                await self._reset()
                codes = [r.code for r in exc.recipients]
                raise _classify(min(codes) if codes else 450, str(exc)) from None
            except aiosmtplib.SMTPResponseException as exc:
                await self._reset()
                raise _classify(exc.code, exc.message) from None
            except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
                await self._reset()
                raise TemporaryFailure(str(exc) or type(exc).__name__) from None
            if errors:
                code, text = next(iter(errors.values()))
                raise _classify(code, text)

    async def _reset(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            try:
                await client.quit()
            except (TimeoutError, aiosmtplib.SMTPException, OSError):
                client.close()

    async def close(self) -> None:
        """Say QUIT and close."""
        async with self._lock:
            await self._reset()


def _classify(code: int, text: str) -> TemporaryFailure | PermanentFailure:
    if 500 <= code < 600:
        return PermanentFailure(f"{code} {text}")
    return TemporaryFailure(f"{code} {text}")
