"""SMTP delivery over a small pool of reused connections (aiosmtplib)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from email.message import Message
from typing import Any, Protocol

import aiosmtplib

log = logging.getLogger(__name__)


class TemporaryFailure(Exception):
    """Try again later (4xx, connection refused or dropped, timeout)."""


class PermanentFailure(Exception):
    """The server refused for good (5xx)."""


class Mailer(Protocol):
    """What the delivery worker needs of a mailer (a pool, or a test's fake)."""

    async def send_bytes(self, sender: str, recipient: str, data: bytes) -> None: ...

    async def close(self) -> None: ...


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
        await self._deliver(lambda client: client.send_message(message))

    async def send_bytes(self, sender: str, recipient: str, data: bytes) -> None:
        """Send one message already flattened to bytes (headers included)."""
        await self._deliver(lambda client: client.sendmail(sender, [recipient], data))

    async def _deliver(
        self, transfer: Callable[[aiosmtplib.SMTP], Awaitable[tuple[dict[str, Any], str]]]
    ) -> None:
        async with self._lock:
            try:
                if self._client is None or not self._client.is_connected:
                    self._client = await self._connect()
                errors, _ = await transfer(self._client)
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


class SmtpPool:
    """Up to ``size`` connections, each used by one send at a time.

    A send takes an idle connection (or waits for one), so ``size`` sends run at once and
    a connection that drops is reopened by the next send that takes it."""

    def __init__(self, connect: Callable[[], SmtpMailer], size: int) -> None:
        if size < 1:
            raise ValueError("an SMTP pool needs at least one connection")
        self.size = size
        self._mailers = [connect() for _ in range(size)]
        self._idle: asyncio.Queue[SmtpMailer] = asyncio.Queue()
        for mailer in self._mailers:
            self._idle.put_nowait(mailer)

    async def send(self, message: Message) -> None:
        """Send one message over an idle connection."""
        mailer = await self._idle.get()
        try:
            await mailer.send(message)
        finally:
            self._idle.put_nowait(mailer)

    async def send_bytes(self, sender: str, recipient: str, data: bytes) -> None:
        """Send one flattened message over an idle connection."""
        mailer = await self._idle.get()
        try:
            await mailer.send_bytes(sender, recipient, data)
        finally:
            self._idle.put_nowait(mailer)

    async def close(self) -> None:
        """Close every connection."""
        for mailer in self._mailers:
            await mailer.close()


def _classify(code: int, text: str) -> TemporaryFailure | PermanentFailure:
    if 500 <= code < 600:
        return PermanentFailure(f"{code} {text}")
    return TemporaryFailure(f"{code} {text}")
