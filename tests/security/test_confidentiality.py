"""Nothing confidential leaves the system: not in an event, a mail, a log line or a public
answer [P1][P2]; neither do editors' ``notes``.

A hypothesis property drives IRCCs through the registry whose confidential field groups
(``shared/records/permit.py: CONFIDENTIAL_GROUPS``) are flagged while still carrying values:
providers and PIC holders are published contacts whose identifier and e-mail hold a unique
sentinel token (so they would be mailable), ``subjectMatter`` (rich text, in several
languages) and ``usages`` (a term's ``customValue``) hold sentinels in drawn text, and every
draft's ``notes`` holds one. Examples publish directly (PA) or through the NAU request
workflow, amend, revoke, leave an unpublished draft behind, and get cited by a CPC whose
``notes`` hold a sentinel too. After each example has settled (every IRCC event and CPC
mailed to the issuing CNA, seen by the monitor, and every mail's delivery event on Kafka),
the sentinels of every example so far must be absent from:
- every message on every topic of the test prefix (``absch.*`` and their DLQs), read with
  aiokafka from the beginning; the contacts' own ``directory.record.published`` events are
  public and are searched for notes sentinels only;
- every mail of the SMTP sink, raw bytes and decoded parts;
- every log record of the test, captured by ``caplog`` at DEBUG for every logger (but the
  database drivers' own statement logging, and the test's own HTTP client);
- every public answer about the IRCCs and CPCs (records, revisions, verify, search,
  communiqués) and, as the Secretariat, the monitor's dashboard numbers, the delivery log
  and the discrepancy cases;
- on SQLite, the database files themselves (confidential text is never stored [P1]).

A control test publishes the same kinds of sentinels without the flags and finds them in
events, mails and public answers, so the search is known to see what it looks for.

Why this shape: the stack is started once per module and database backend (module-scoped
fixture and event loop) and every example reuses it, because starting four services per
example would cost seconds each. The property is a ``@given`` async test, which
pytest-asyncio runs in the module loop; ``caplog`` is function-scoped, so it deliberately
spans every example (HealthCheck.function_scoped_fixture is suppressed for that).
Sentinels are fresh per example, so examples stay independent although the stack is
shared. Examples are derandomized and bounded; shrinking is off (each example costs about
a second against a stateful stack; the failing scenario is printed whole instead).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from services.notifier.context import NotifierContext
from shared.events import Topic, decode_event, topic_name
from shared.records.permit import CONFIDENTIAL_GROUPS
from tests.support import records as rec
from tests.support.communiques import communique
from tests.support.databases import BACKENDS, skip_unless_backend
from tests.support.mail import consumed, metric
from tests.support.metrics import scrape
from tests.support.poll import eventually
from tests.support.registry import ADMIN_TOKEN, auth, create_user, government_users, publish
from tests.support.security_leaks import (
    Cursor,
    Haystack,
    KafkaTap,
    Leak,
    MailTap,
    log_text,
    raw_message,
    sentinel,
)
from tests.support.security_stack import module_stack
from tests.support.stack import Stack
from tools.smtp_sink import SmtpSink

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

PROVIDER, USER = "mx", "de"
GROUPS = tuple(CONFIDENTIAL_GROUPS)
FLAGS = dict(CONFIDENTIAL_GROUPS)
LANGUAGES = ("en", "fr", "es", "ru", "zh", "ar")
MAX_EXAMPLES = 10
# Sentinel contacts published before the examples, each used once: at most 3 per revision
# (2 providers, 1 PIC holder) and 3 revisions with contacts per example (first, amended,
# left as a draft), for the drawn examples and the explicit one.
POOL = 9 * (MAX_EXAMPLES + 1)
# Statement logging of the database drivers shows what is stored (drafts keep notes by
# design; confidential text is checked in the database files instead). httpx/httpcore log
# the test's own requests, whose URLs carry sentinels on purpose (search).
# Database statement logs (drafts keep notes by design), the test's own HTTP client, and
# request lines (the test searches for its sentinels on purpose, so its URLs hold them).
UNCHECKED_LOGGERS = ("sqlalchemy", "aiosqlite", "asyncpg", "httpx", "httpcore", "uvicorn.access")
SHAPES = (
    "{a}{t}{b}",
    "<p>{a}<strong>{t}</strong>{b}</p>",
    '<p><a href="https://example.org/{t}">{a}</a>{b}x</p>',
    "<!-- {t} --><p>{a}x{b}</p>",
    "{a}\n{t} {b}",
)


@dataclass(frozen=True)
class Scenario:
    """One drawn IRCC life."""

    confidential: frozenset[str]
    languages: tuple[str, ...]
    shape: str
    before: str
    after: str
    pin_references: bool
    holders_are_providers: bool
    via_request: bool
    amend: bool
    revoke: bool
    cite_in_cpc: bool
    leave_draft: bool

    def text(self, token: str) -> str:
        """Drawn rich text around ``token``."""
        return self.shape.format(a=self.before, b=self.after, t=token)


noise = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Co", "Cn")),
    max_size=12,
)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """IRCC lives with at least one confidential group."""
    groups = draw(st.sets(st.sampled_from(GROUPS), min_size=1))
    return Scenario(
        confidential=frozenset(groups),
        languages=tuple(draw(st.lists(st.sampled_from(LANGUAGES), min_size=1, unique=True))),
        shape=draw(st.sampled_from(SHAPES)),
        before=draw(noise),
        after=draw(noise),
        pin_references=draw(st.booleans()),
        holders_are_providers=draw(st.booleans()),
        via_request=draw(st.booleans()),
        amend=draw(st.booleans()),
        revoke=draw(st.booleans()),
        cite_in_cpc=draw(st.booleans()),
        leave_draft=draw(st.booleans()),
    )


EVERYTHING = Scenario(
    confidential=frozenset(GROUPS),
    languages=("en", "fr", "zh"),
    shape=SHAPES[1],
    before="Ñandú ",
    after=" 微生物",
    pin_references=True,
    holders_are_providers=False,
    via_request=True,
    amend=True,
    revoke=True,
    cite_in_cpc=True,
    leave_draft=False,
)


@dataclass
class Tokens:
    """Sentinels planted so far, by what they may never reach."""

    contacts: set[str] = field(default_factory=set)  # public contacts, confidential links
    texts: set[str] = field(default_factory=set)  # confidential text: never even stored
    notes: set[str] = field(default_factory=set)  # editors' notes: stored on drafts only

    def all(self) -> set[str]:
        """Every token."""
        return self.contacts | self.texts | self.notes


@dataclass
class World:
    """The running stack, its users and records, and what was collected from it."""

    stack: Stack
    prefix: str
    tmp: Path
    backend: str
    smtp: SmtpSink
    tap: KafkaTap
    admin: str
    users: dict[str, dict[str, str]]
    cna: str
    cna_address: str
    checkpoint_operator: str
    checkpoint: str
    public_contacts: list[str]
    own_records: set[str]  # identifiers of directory records published by the fixture
    pool: list[tuple[str, str]]  # (identifier, token) of unused sentinel contacts
    tokens: Tokens = field(default_factory=Tokens)
    irccs: int = 0  # IRCC events caused so far
    cpcs: int = 0  # CPCs citing an IRCC of PROVIDER so far
    kafka: Haystack = field(default_factory=lambda: Haystack("kafka"))
    directory: Haystack = field(default_factory=lambda: Haystack("kafka (own contacts)"))
    logs: Haystack = field(default_factory=lambda: Haystack("logs"))
    answers: Haystack = field(default_factory=lambda: Haystack("answers"))
    mails: Haystack = field(default_factory=lambda: Haystack("mails"))
    mail_tap: MailTap | None = None
    log_cursor: Cursor | None = None
    kafka_seen: int = 0
    searched: set[str] = field(default_factory=set)

    def take_contacts(self, count: int) -> list[str]:
        """Fresh sentinel contacts; their tokens join ``tokens.contacts``."""
        taken, self.pool = self.pool[:count], self.pool[count:]
        assert len(taken) == count, "sentinel contact pool exhausted: raise POOL"
        self.tokens.contacts |= {token for _, token in taken}
        return [ident for ident, _ in taken]


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=BACKENDS)
async def world(
    request: pytest.FixtureRequest, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    """Mexico issues IRCCs (NFP, CNA, two public contacts, a pool of sentinel contacts);
    Germany runs a checkpoint that cites them."""
    backend = str(request.param)
    skip_unless_backend(backend)
    tmp: Path = tmp_path_factory.mktemp(f"confidential-{backend}")
    with SmtpSink(maildir=tmp / "mail") as smtp:
        async with module_stack(kafka=kafka_bootstrap, backend=backend, tmp=tmp, smtp=smtp) as (
            stack,
            prefix,
        ):
            reg = stack.registry
            tokens = Tokens()
            admin = await create_user(reg, ADMIN_TOKEN, "admin")
            users = {gov: await government_users(reg, gov) for gov in (PROVIDER, USER)}
            pa = users[PROVIDER]["pa"]
            published: list[str] = []

            async def put(token: str, record: dict[str, Any]) -> str:
                note = sentinel("notes")
                tokens.notes.add(note)
                record["notes"] = f"private: {note}"
                await publish(reg, token, record)
                published.append(record["header"]["identifier"])
                return str(record["header"]["identifier"])

            await put(ADMIN_TOKEN, rec.focal_point(PROVIDER, [f"nfp@{PROVIDER}.example"]))
            cna_address = f"cna@{PROVIDER}.example"
            cna = await put(pa, rec.authority(PROVIDER, [cna_address]))
            public = [
                await put(pa, rec.contact([f"public-{n}@{PROVIDER}.example"], gov=PROVIDER))
                for n in (1, 2)
            ]
            pool = []
            for _ in range(POOL):
                token = sentinel("contact")
                contact = rec.contact([f"{token}@holder.example"], gov=PROVIDER)
                contact["header"]["identifier"] = f"C-{token}"
                await put(pa, contact)
                pool.append((f"C-{token}", token))
            checkpoint = await put(users[USER]["pa"], rec.checkpoint(USER))
            operator = await create_user(
                reg, users[USER]["pa"], "checkpoint", USER, checkpoint=checkpoint
            )
            ctx: NotifierContext = stack.notifier_app.state.ctx
            await eventually(
                lambda: all(ctx.projection.knows(i) for i in published),
                timeout=60,
                what="the notifier knows every directory record",
            )
            directory = topic_name(Topic.DIRECTORY, prefix)
            await eventually(
                lambda: _consumed_at_least(stack.checkpoint, directory, len(published)),
                timeout=60,
                what="the checkpoint service read the directory",
            )
            tap = await KafkaTap(kafka_bootstrap, prefix).start()
            try:
                yield World(
                    stack=stack,
                    prefix=prefix,
                    tmp=tmp,
                    backend=backend,
                    smtp=smtp,
                    tap=tap,
                    admin=admin,
                    users=users,
                    cna=cna,
                    cna_address=cna_address,
                    checkpoint_operator=operator,
                    checkpoint=checkpoint,
                    public_contacts=public,
                    own_records=set(published),
                    pool=pool,
                    tokens=tokens,
                )
            finally:
                await tap.stop()


async def _consumed_at_least(client: httpx.AsyncClient, topic: str, count: int) -> bool:
    return await consumed(client, "checkpoint", topic) >= count


# ---------------------------------------------------------------- playing a scenario


@dataclass
class Played:
    """What one example published."""

    identifier: str
    uids: list[str] = field(default_factory=list)
    cpc_uid: str | None = None

    @property
    def permanent(self) -> str:
        """The revision-less UID."""
        return self.uids[0].rsplit("-", 1)[0]


def permit_body(world: World, s: Scenario, identifier: str | None) -> dict[str, Any]:
    """An IRCC revision for ``s``: flagged groups carry fresh sentinels, notes too."""
    tokens = world.tokens

    def ref(ident: str) -> str:
        return f"{ident}@1" if s.pin_references else ident

    if "providers" in s.confidential:
        providers = world.take_contacts(2)
    else:
        providers = [world.public_contacts[0]]
    if "entitiesToWhomPICGranted" not in s.confidential:
        holders = [world.public_contacts[1]]
    elif s.holders_are_providers and "providers" in s.confidential:
        holders = providers
    else:
        holders = world.take_contacts(1)
    body = rec.permit(
        PROVIDER,
        world.cna,
        providers=[ref(p) for p in providers],
        pic_holders=[ref(h) for h in holders],
    )
    if identifier:
        body["header"]["identifier"] = identifier
    body["header"]["languages"] = list(s.languages)
    if "subjectMatter" in s.confidential:
        texts = {lang: sentinel("subject") for lang in s.languages}
        tokens.texts |= set(texts.values())
        body["subjectMatter"] = {lang: s.text(token) for lang, token in texts.items()}
    if "usages" in s.confidential:
        usage = sentinel("usage")
        tokens.texts.add(usage)
        body["usages"] = [
            {"identifier": rec.NON_COMMERCIAL, "customValue": {s.languages[0]: s.text(usage)}}
        ]
    for group in s.confidential:
        body[FLAGS[group]] = True
    note = sentinel("notes")
    tokens.notes.add(note)
    body["notes"] = f"{s.before}{note}{s.after}"
    return body


def _ok(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    return out


async def _approve(world: World, answer: dict[str, Any]) -> str:
    """The PA approves an NAU's request; returns the new revision's UID."""
    assert answer["status"] == "requested", answer
    resp = await world.stack.registry.post(
        f"/v1/requests/{answer['requestId']}/approve", headers=auth(world.users[PROVIDER]["pa"])
    )
    return str(_ok(resp)["uid"])


async def publish_revision(world: World, s: Scenario, body: dict[str, Any]) -> str:
    """Save and publish one revision, by the PA or through an NAU request."""
    reg, users = world.stack.registry, world.users[PROVIDER]
    editor = users["nau"] if s.via_request else users["pa"]
    url = f"/v1/records/absPermit/{body['header']['identifier']}"
    _ok(await reg.put(url, json=body, headers=auth(editor)))
    answer = _ok(await reg.post(f"{url}/publish", headers=auth(editor)))
    world.irccs += 1
    return await _approve(world, answer) if s.via_request else str(answer["uid"])


async def play(world: World, s: Scenario) -> Played:
    """Publish, maybe amend, maybe revoke, maybe cite, maybe leave a draft."""
    reg, users = world.stack.registry, world.users[PROVIDER]
    first = permit_body(world, s, None)
    played = Played(first["header"]["identifier"])
    played.uids.append(await publish_revision(world, s, first))
    if s.amend:
        body = permit_body(world, s, played.identifier)
        body["amendmentDescription"] = {"en": "conditions changed"}
        played.uids.append(await publish_revision(world, s, body))
    if s.revoke:
        editor = users["nau"] if s.via_request else users["pa"]
        answer = _ok(
            await reg.post(
                f"/v1/records/absPermit/{played.identifier}/revoke",
                json={"reason": {"en": "permit withdrawn"}},
                headers=auth(editor),
            )
        )
        world.irccs += 1
        played.uids.append(await _approve(world, answer) if s.via_request else str(answer["uid"]))
    if s.cite_in_cpc:
        note = sentinel("notes")
        world.tokens.notes.add(note)
        cited = f"{played.identifier}@1" if s.pin_references else played.identifier
        body = communique(
            USER,
            [world.checkpoint],
            irccs=[cited],
            personsAtCheckpoint=[{"identifier": world.public_contacts[1]}],
            notes=f"operator's note {note}",
        )
        resp = await world.stack.checkpoint.post(
            "/v1/communiques", json=body, headers=auth(world.checkpoint_operator)
        )
        assert resp.status_code == 201, resp.text
        played.cpc_uid = str(resp.json()["uid"])
        world.cpcs += 1
    if s.leave_draft and not s.revoke:
        body = permit_body(world, s, played.identifier)
        url = f"/v1/records/absPermit/{played.identifier}"
        _ok(await reg.put(url, json=body, headers=auth(users["pa"])))
    return played


# ---------------------------------------------------------------- settling and looking


async def _monitor_seen(world: World) -> float:
    text = await scrape(world.stack.monitor)
    kinds = ("ircc.published", "ircc.amended", "ircc.revoked", "cpc.published")
    return sum(metric(text, "monitor_events_seen_total", type=kind) or 0.0 for kind in kinds)


async def settle(world: World) -> None:
    """Until every IRCC event and CPC reached the CNA's mailbox and the monitor, and every
    mail's ``notification.delivered`` is on Kafka."""
    await eventually(
        lambda: len(world.smtp.mails_to(world.cna_address)) >= world.irccs + world.cpcs,
        timeout=30,
        what="the CNA mailed about every IRCC event and CPC",
    )
    await eventually(
        lambda: _at_least(_monitor_seen(world), world.irccs + world.cpcs),
        timeout=30,
        what="the monitor saw every IRCC event and CPC",
    )
    notifications = topic_name(Topic.NOTIFICATION, world.prefix)

    async def delivered_all() -> bool:
        await world.tap.drain()
        outcomes = [r for r in world.tap.records if r.topic == notifications]
        return len(outcomes) >= len(world.smtp.mails)

    await eventually(delivered_all, timeout=30, what="a delivery event for every mail")


async def _at_least(value: Awaitable[float], wanted: float) -> bool:
    return await value >= wanted


async def feed_kafka(world: World) -> None:
    """Read the topics to their end and sort the records not searched yet: the fixture's
    own directory records apart (they are public and may name the sentinel contacts, but
    carry no notes)."""
    await world.tap.drain()
    directory = topic_name(Topic.DIRECTORY, world.prefix)
    records, world.kafka_seen = world.tap.records[world.kafka_seen :], len(world.tap.records)
    for record in records:
        label = f"{record.topic}@{record.partition}:{record.offset}"
        text = raw_message(record)
        haystack = world.kafka
        if record.topic == directory:
            try:
                event = decode_event(record.value)
            except Exception:
                event = None
            if event is not None and getattr(event.data, "identifier", None) in world.own_records:
                haystack = world.directory
        haystack.add(label, text)


async def public_answers(world: World, played: Played) -> None:
    """Read what anybody (and the Secretariat) can about the example's records."""
    reg, cp, mon = world.stack.registry, world.stack.checkpoint, world.stack.monitor
    paths = [
        f"/v1/records/{played.identifier}",
        f"/v1/records/{played.permanent}",
        f"/v1/records/{played.identifier}/revisions",
        f"/v1/verify/{played.permanent}",
        *(f"/v1/records/{uid}" for uid in played.uids),
        *(f"/v1/verify/{uid}" for uid in played.uids),
    ]
    for path in paths:
        resp = await reg.get(path)
        assert resp.status_code == 200, f"{path}: {resp.text}"
        world.answers.add(f"GET {path}", resp.text)
    draft = await reg.get(f"/v1/records/{played.identifier}", params={"draft": "true"})
    assert draft.status_code == 404, draft.text
    hit = await reg.get("/v1/search", params={"q": played.identifier})
    world.answers.add(f"search {played.identifier}", hit.text)
    if played.cpc_uid:
        for path in (
            f"/v1/communiques/{played.cpc_uid}",
            f"/v1/communiques?ircc={played.identifier}",
        ):
            resp = await cp.get(path)
            assert resp.status_code == 200, resp.text
            world.answers.add(f"GET checkpoint {path}", resp.text)
    admin = auth(world.admin)
    summary = await mon.get("/v1/dashboard/summary", headers=admin)
    assert summary.status_code == 200, summary.text
    world.answers.add("GET monitor /v1/dashboard/summary (admin)", summary.text)
    deliveries = await world.stack.notifier.get(
        "/v1/deliveries", params={"subject": played.permanent}, headers=admin
    )
    world.answers.add(f"deliveries of {played.permanent} (admin)", deliveries.text)
    cases = await mon.get("/v1/discrepancies", params={"provider": PROVIDER}, headers=admin)
    world.answers.add("discrepancies of mx (admin)", cases.text)


async def unsearchable(world: World) -> list[str]:
    """Searching for a sentinel never finds an IRCC (nor, for text, anything); each token
    is searched once, after the example that planted it."""
    found = []
    fresh = world.tokens.all() - world.searched
    world.searched |= fresh
    for token in sorted(fresh):
        resp = await world.stack.registry.get("/v1/search", params={"q": token})
        assert resp.status_code == 200, resp.text
        items = resp.json()["items"]
        hits = [
            i for i in items if i["schema"] == "absPermit" or token not in world.tokens.contacts
        ]
        found += [f"search {token} -> {i['uid']} ({i['schema']})" for i in hits]
    return found


def database_leaks(world: World) -> list[Leak]:
    """On SQLite, confidential text in any database file (nothing is stored [P1])."""
    if world.backend != "sqlite":
        return []
    files = Haystack("database files")
    for path in sorted(world.tmp.rglob("*")):
        if path.is_file() and ".db" in path.name:
            files.add(str(path.relative_to(world.tmp)), path.read_bytes().decode("latin-1"))
    return files.find(world.tokens.texts)


async def look_everywhere(
    world: World, caplog: pytest.LogCaptureFixture, played: Played
) -> list[str]:
    """Every sentinel planted so far, found anywhere it must not be."""
    await feed_kafka(world)
    if world.log_cursor is None:
        world.log_cursor = Cursor(
            world.logs,
            label=lambda r: f"{r.name}:{r.levelname}",
            text=lambda r: None if r.name.startswith(UNCHECKED_LOGGERS) else log_text(r),
        )
    world.log_cursor.feed(caplog.records)
    await public_answers(world, played)
    if world.mail_tap is None:
        world.mail_tap = MailTap(world.smtp, world.tmp / "mail", world.mails)
    world.mail_tap.feed()
    tokens = world.tokens
    leaks = [
        *world.kafka.find(tokens.all()),
        *world.directory.find(tokens.texts | tokens.notes),
        *world.mails.find(tokens.all()),
        *world.logs.find(tokens.all()),
        *world.answers.find(tokens.all()),
        *database_leaks(world),
    ]
    return [str(leak) for leak in leaks] + await unsearchable(world)


def capture_everything(caplog: pytest.LogCaptureFixture) -> None:
    """DEBUG for the root logger and every named one (their own levels would filter)."""
    caplog.set_level(logging.DEBUG)
    for name in list(logging.root.manager.loggerDict):
        if not name.startswith(UNCHECKED_LOGGERS):
            caplog.set_level(logging.DEBUG, logger=name)


# ---------------------------------------------------------------- the property


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
@example(scenario=EVERYTHING)
@given(scenario=scenarios())
async def test_no_confidential_value_or_note_leaves_the_system(
    world: World, caplog: pytest.LogCaptureFixture, scenario: Scenario
) -> None:
    capture_everything(caplog)
    played = await play(world, scenario)
    await settle(world)
    leaks = await look_everywhere(world, caplog, played)
    assert not leaks, f"{len(leaks)} leaks, first ones:\n" + "\n".join(leaks[:25])


async def test_the_same_values_are_found_when_not_confidential(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Control: without the flags, the same sentinels are found in events, mails and public
    answers (and notes on the draft its editors read), so the search above can see them."""
    capture_everything(caplog)
    subject, usage, note = sentinel("subject"), sentinel("usage"), sentinel("notes")
    body = rec.permit(
        PROVIDER,
        world.cna,
        providers=[world.public_contacts[0]],
        pic_holders=[world.public_contacts[1]],
    )
    body["subjectMatter"] = {"en": f"<p>{subject}</p>"}
    body["usages"] = [{"identifier": rec.NON_COMMERCIAL, "customValue": {"en": usage}}]
    body["notes"] = note
    pa = world.users[PROVIDER]["pa"]
    url = f"/v1/records/absPermit/{body['header']['identifier']}"
    _ok(await world.stack.registry.put(url, json=body, headers=auth(pa)))
    draft = await world.stack.registry.get(
        f"/v1/records/{body['header']['identifier']}", params={"draft": "true"}, headers=auth(pa)
    )
    assert note in draft.text
    uid = str(_ok(await world.stack.registry.post(f"{url}/publish", headers=auth(pa)))["uid"])
    world.irccs += 1
    # Counting the CNA's mails is not enough here (discrepancy alerts also reach the CNA):
    # wait for this IRCC's own mail.
    await eventually(
        lambda: any(
            m.header("X-ABSCH-Subject") == uid for m in world.smtp.mails_to(world.cna_address)
        ),
        timeout=30,
        what="the CNA mailed about the control IRCC",
    )
    await settle(world)
    await feed_kafka(world)
    public = Haystack("public")
    public.add("record", (await world.stack.registry.get(f"/v1/records/{uid}")).text)
    mails = Haystack("mails")
    MailTap(world.smtp, world.tmp / "mail", mails).feed()
    for haystack, wanted in (
        (world.kafka, {subject, usage}),
        (public, {subject, usage}),
        (mails, {subject}),
    ):
        assert {leak.token for leak in haystack.find(wanted)} == wanted, haystack.name
    assert not public.find([note])
