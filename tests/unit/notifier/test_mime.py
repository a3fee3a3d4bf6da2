"""The delivery worker's hand-assembled MIME is the message the email package builds."""

from __future__ import annotations

import email
from email.header import decode_header, make_header
from email.message import Message
from email.policy import compat32
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.notifier.delivery import mail_bytes, to_message

# What templates and records put in mails: any printable text, spaces at line ends, "=" and
# dots (QP and SMTP specials), lines longer than 76 characters.
_TEXT = st.lists(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"))
        | st.sampled_from(["\n", " ", "=", ".", "\t"]),
        max_size=60,
    )
    | st.sampled_from(["From here", "\n.\n", "=3D", " \n", "x" * 90]),
    max_size=8,
).map("".join)
_LINE = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=120
)


def _ctx() -> Any:
    sender = "ABS Clearing-House <abs@absch.test>"
    return SimpleNamespace(settings=SimpleNamespace(mail_from=sender))


def _row(subject: str, text: str, html: str) -> Any:
    return SimpleNamespace(
        event_id="0b6c1c6e-2f8e-4d0e-9b57-8f2b9a7f3a10",
        subject="ABSCH-CPC-DE-12-1",
        template="cpc_published",
        language="fr",
        recipient="cna@example.org",
        mail_subject=subject,
        text_body=text,
        html_body=html,
    )


def _part(part: Any) -> tuple[str, str | None, str | None, str]:
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return (
        part.get_content_type(),
        part.get_content_charset(),
        part["Content-Transfer-Encoding"],
        payload.decode("utf-8"),
    )


def _facts(msg: Message) -> dict[str, Any]:
    parts = msg.get_payload()
    assert isinstance(parts, list)
    return {
        "headers": [
            (k, str(make_header(decode_header(v))))
            for k, v in msg.items()
            if k not in ("Content-Type", "Date")
        ],
        "type": msg.get_content_type(),
        "parts": [_part(p) for p in parts],
    }


@settings(max_examples=150, deadline=None)
@given(subject=_LINE, text=_TEXT, html=_TEXT)
def test_the_assembled_message_carries_exactly_the_mail(subject: str, text: str, html: str) -> None:
    raw = mail_bytes(_ctx(), _row(subject, text, html), {})
    assert max(len(line) for line in raw.split(b"\n")) <= 78
    msg = email.message_from_bytes(raw, policy=compat32)
    facts = _facts(msg)
    headers = dict(facts["headers"])
    assert headers["Subject"] == subject.strip() or headers["Subject"] == subject
    assert headers["To"] == "cna@example.org"
    assert headers["X-ABSCH-Subject"] == "ABSCH-CPC-DE-12-1"
    assert facts["type"] == "multipart/alternative"
    assert [p[:3] for p in facts["parts"]] == [
        ("text/plain", "utf-8", "quoted-printable"),
        ("text/html", "utf-8", "quoted-printable"),
    ]
    assert [p[3] for p in facts["parts"]] == [text, html]


@settings(max_examples=100, deadline=None)
@given(subject=_LINE, text=_TEXT, html=_TEXT)
def test_the_assembled_message_reads_as_the_email_package_builds_it(
    subject: str, text: str, html: str
) -> None:
    row = _row(subject, text, html)
    ours = email.message_from_bytes(mail_bytes(_ctx(), row, {}), policy=compat32)
    theirs = email.message_from_bytes(to_message(_ctx(), row).as_bytes(), policy=compat32)
    mine, package = _facts(ours), _facts(theirs)
    assert sorted(mine["headers"]) == sorted(package["headers"])
    assert mine["type"] == package["type"]
    # The email package turns "\n"-less line ends of its own; compare line by line.
    assert [(*p[:3], p[3].splitlines()) for p in mine["parts"]] == [
        (*p[:3], p[3].splitlines()) for p in package["parts"]
    ]
