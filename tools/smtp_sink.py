"""A real SMTP server on loopback that keeps every message (aiosmtpd).

Usage: ``python -m tools.smtp_sink [--port 1025] [--dir var/mail]`` writes each received
message to ``<dir>/<n>-<recipient>.eml``. Tests use :class:`SmtpSink` directly and can make
it refuse temporarily (451) or reject given recipients permanently (550).
"""

from __future__ import annotations

import argparse
import email
import email.policy
import itertools
import logging
import re
import signal
import sys
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tools.ports import free_port

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReceivedMail:
    """One message as delivered to one envelope recipient."""

    recipient: str
    message: EmailMessage

    @property
    def subject(self) -> str:
        """The Subject header."""
        return str(self.message["Subject"] or "")

    def header(self, name: str) -> str:
        """Any header, empty when absent."""
        return str(self.message[name] or "")

    def body(self, subtype: str = "plain") -> str:
        """The text/<subtype> part."""
        part = self.message.get_body(preferencelist=(subtype,))
        return "" if part is None else str(part.get_content())


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(  # noqa: N802 - aiosmtpd hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self.sink.refusing:
            return "451 4.3.2 try again later"
        if address.lower() in self.sink.rejected:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        if self.sink.refusing:
            return "451 4.3.2 try again later"
        raw = envelope.original_content or envelope.content
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        message = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        for rcpt in envelope.rcpt_tos:
            self.sink.record(ReceivedMail(rcpt, message), data)
        return "250 Message accepted for delivery"


class SmtpSink:
    """An SMTP server in a background thread; ``mails`` lists what arrived."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int | None = None, maildir: Path | None = None
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.maildir = maildir
        self.refusing = False
        self.rejected: set[str] = set()
        self._mails: list[ReceivedMail] = []
        self._lock = threading.Lock()
        self._counter = itertools.count(1)
        self._controller = Controller(_Handler(self), hostname=host, port=self.port)

    def start(self) -> SmtpSink:
        """Start listening."""
        if self.maildir:
            self.maildir.mkdir(parents=True, exist_ok=True)
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        self._controller.stop()

    def record(self, mail: ReceivedMail, raw: bytes) -> None:
        """Keep a delivered message (and write it to the mail folder)."""
        with self._lock:
            self._mails.append(mail)
            n = next(self._counter)
        if self.maildir:
            safe = re.sub(r"[^A-Za-z0-9@._-]", "_", mail.recipient)
            (self.maildir / f"{n:06d}-{safe}.eml").write_bytes(raw)
        log.info("mail for %s: %s", mail.recipient, mail.subject)

    @property
    def mails(self) -> list[ReceivedMail]:
        """A snapshot of every delivered message."""
        with self._lock:
            return list(self._mails)

    def mails_to(self, recipient: str) -> list[ReceivedMail]:
        """Messages delivered to one address."""
        return [m for m in self.mails if m.recipient.lower() == recipient.lower()]

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the sink in the foreground until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(description="SMTP sink keeping every message as a file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", type=Path, default=Path("var/mail"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s smtp-sink %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    with SmtpSink(host=args.host, port=args.port, maildir=args.dir):
        log.info("listening on %s:%s, writing to %s", args.host, args.port, args.dir)
        done.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
