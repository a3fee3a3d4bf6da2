"""Schemathesis against the OpenAPI of every service, as ``schemathesis run --checks all``:
every answer passes all of schemathesis' checks, no answer is a 5xx, every 4xx is a problem.

One stack per database backend serves the module (module-scoped fixture and event loop).
For every operation of every service's ``/openapi.json``:
- coverage: schemathesis' coverage phase (each bound, each constraint broken alone, the
  methods the path does not declare, malformed content types), deterministic;
- fuzzing: schemathesis' positive and negative case strategies, ``max_examples`` bounded and
  derandomized, so a run is reproducible;
- edges: each path and query parameter alone set to a value that passes type validation but
  may break the storage underneath (integers and digit strings past 64 bits, a NUL
  character, a long text), the other required parameters valid.
Every case carries a valid token, alternately an admin JWT and a PA JWT (the registry's
writes need a PA), unless schemathesis drops it for a negative case. Failures are collected,
not raised, so one run lists every broken operation and no time goes into shrinking against
a stateful server.

The checks: every check schemathesis registers runs on every answer (``case.validate_response``
with the httpx response): status codes, content types, headers and bodies as documented,
negative data refused, positive data accepted, 405s with ``Allow`` and what they list,
missing required headers. ``ignored_auth`` (and ``object_level_authorization``, which needs
several identities configured and so finds nothing here) send requests of their own with
``requests``: they run in a worker thread while the services keep serving on this loop, on
each operation's first 2xx answer. ``use_after_free`` and ``ensure_resource_availability``
compare calls that schemathesis' stateful phase links together; without it they run and
find nothing to compare. A check that cannot apply to an operation is listed in
``EXCLUDED`` with the reason, never to get around a failure.

How it is driven: cases are drawn with hypothesis synchronously (no I/O), then sent with
httpx from the test's event loop, where the services run. Blocking ``case.call()`` would
need the services in another thread, and on CPython 3.11.7 two threads formatting
tracebacks at once (uvicorn logging a 500 while pytest reports) crash pytest with
``SystemError: AST constructor recursion depth mismatch`` (CPython gh-106905). The lazy
``schemathesis.pytest.from_fixture`` integration fails under pytest 9.2 (``'Function'
object has no attribute '_nodeid'``), and its coverage phase did not produce the
out-of-range integers that the edge cases found.

The contract (DESIGN.md §4): no answer is a 5xx, and every 4xx is
``application/problem+json`` carrying the HTTP ``status`` and a ``title``. The tests at the
end pin each bug the fuzzing found, one request each, and check that every timestamp a
real answer carries is UTC with its offset.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest
import pytest_asyncio
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, CheckFunction, GenerationMode
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.failures import Failure, FailureGroup

from tests.support import records as rec
from tests.support.communiques import communique
from tests.support.databases import BACKENDS, skip_unless_backend
from tests.support.poll import eventually
from tests.support.registry import ADMIN_TOKEN, auth, create_user, government_users, publish
from tests.support.security_stack import module_stack
from tools.smtp_sink import SmtpSink

log = logging.getLogger(__name__)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.asyncio(loop_scope="module"),
    # schemathesis' own strategies use ``random``; hypothesis warns about it on every run.
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

PROBLEM_JSON = "application/problem+json"
SERVICES = ("registry", "checkpoint", "notifier", "monitor")
MAX_EXAMPLES = 40  # per operation
MAX_FAILURES_PER_OPERATION = 3  # distinct violations shown
FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
# Values that pass type validation but not necessarily the storage underneath.
EDGE_INTEGERS = (2**63, 2**70, -(2**63) - 1)
EDGE_STRINGS = ("\x00", "nul\x00inside", "9" * 20, "x" * 5000)
Operation = APIOperation[Any, Any, Any, Any]
AnyCase = Case[Any]
# Client-side refusals to send a generated case (not the server's doing).
UNSENDABLE = (httpx.LocalProtocolError, httpx.InvalidURL, UnicodeEncodeError, ValueError)

load_all_checks()
# ``schemathesis run --checks all``: every check function it registers, by name.
ALL_CHECKS: dict[str, CheckFunction] = {
    check.__name__: check for check in CHECKS.get_all() if not isinstance(check, type)
}
# These send requests of their own with ``requests`` (blocking), so they run in a worker
# thread while the services go on serving on this loop; once per operation, on its first
# 2xx answer (enforcing authentication is a property of the operation, not of a case).
PROBING = frozenset({"ignored_auth", "object_level_authorization"})
# Checks that cannot apply to an operation, and why (never a way around a real failure).
# A record body is any object to the schema: whether it is a valid record of its schema, its
# header naming the URL and its references naming published records of the same government,
# is for the record validation to say (422 naming the field, documented) and no positive
# case drawn from "an object" can be expected to pass it.
SEMANTIC_RECORD = "a whole record, valid only with the URL's header and real references"
EXCLUDED: dict[str, dict[str, str]] = {
    "PUT /v1/records/{schema}/{identifier}": {"positive_data_acceptance": SEMANTIC_RECORD},
    "POST /v1/communiques": {"positive_data_acceptance": SEMANTIC_RECORD},
    "POST /v1/communiques/{uid}/amend": {"positive_data_acceptance": SEMANTIC_RECORD},
}


@dataclass
class Target:
    """The served stack: clients, tokens to present, and what was sent."""

    clients: dict[str, httpx.AsyncClient]
    tokens: list[str]
    operations: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    unsendable: Counter[str] = field(default_factory=Counter)
    probed: Counter[str] = field(default_factory=Counter)  # operations whose auth was probed
    _turn: Iterator[int] = field(default_factory=itertools.count)

    def next_token(self) -> str:
        """Alternate between the tokens, so every operation sees each of them."""
        return self.tokens[next(self._turn) % len(self.tokens)]

    def summary(self, service: str) -> str:
        """Operations and requests of one service, and its answers by status."""
        by_status = {code: n for (s, code), n in sorted(self.answers.items()) if s == service}
        return (
            f"{service}: {self.operations[service]} operations, {self.requests[service]} "
            f"requests {by_status} (each through {len(ALL_CHECKS)} checks), "
            f"{self.unsendable[service]} cases not sendable, authentication probed on "
            f"{self.probed[service]} operations"
        )


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=BACKENDS)
async def target(
    request: pytest.FixtureRequest, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Target]:
    """The four services, an admin JWT and a PA JWT (of ``mx``)."""
    backend = str(request.param)
    skip_unless_backend(backend)
    tmp: Path = tmp_path_factory.mktemp(f"fuzz-{backend}")
    with SmtpSink(maildir=tmp / "mail") as smtp:
        async with module_stack(kafka=kafka_bootstrap, backend=backend, tmp=tmp, smtp=smtp) as (
            stack,
            _prefix,
        ):
            admin = await create_user(stack.registry, ADMIN_TOKEN, "admin")
            pa = (await government_users(stack.registry, "mx"))["pa"]
            clients = (stack.registry, stack.checkpoint, stack.notifier, stack.monitor)
            found = Target(dict(zip(SERVICES, clients, strict=True)), [admin, pa])
            yield found
    for service in SERVICES:
        log.info("fuzzed on %s: %s", backend, found.summary(service))


# ---------------------------------------------------------------- the contract


def problem_violation(response: httpx.Response) -> str | None:
    """Why an answer breaks the contract (a 5xx; a 4xx that is no RFC 9457 problem)."""
    status = response.status_code
    if status >= 500:
        return f"server error {status}"
    if status < 400:
        return None
    media = response.headers.get("content-type", "").split(";")[0].strip()
    if media != PROBLEM_JSON:
        return f"{status} answered as {media!r}, not {PROBLEM_JSON}"
    try:
        body = response.json()
    except ValueError:
        return f"{status} problem body is not JSON"
    if not isinstance(body, dict) or body.get("status") != status:
        return f"{status} problem does not carry status {status}"
    if not isinstance(body.get("title"), str) or not body["title"]:
        return f"{status} problem has no title"
    return None


# ---------------------------------------------------------------- cases


def fuzz_cases(operation: Operation) -> list[AnyCase]:
    """Positive and negative cases of one operation, drawn without sending anything."""
    strategies = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        try:
            strategies.append(operation.as_strategy(generation_mode=mode))
        except Exception:
            continue
    cases: list[AnyCase] = []

    @FUZZ
    @given(case=st.one_of(strategies))
    def draw(case: AnyCase) -> None:
        cases.append(case)

    draw()
    return cases


def coverage_cases(operation: Operation) -> list[AnyCase]:
    """The cases of schemathesis' coverage phase (deterministic): each bound, each
    constraint broken alone, and the methods the path does not declare (405 with Allow)."""
    schema = operation.schema
    config = schema.config.generation_for(operation=operation)
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    return list(
        schema.iter_coverage_cases(operation, generation_modes=modes, generation_config=config)
    )


def _parameters(raw: dict[str, Any], operation: Operation) -> list[dict[str, Any]]:
    spec = raw["paths"][operation.path][operation.method.lower()]
    return [p for p in spec.get("parameters", []) if p.get("in") in {"path", "query"}]


def _kind(param: dict[str, Any]) -> tuple[str, list[Any]]:
    """The JSON type of a parameter and its enum values, if any."""
    schema = param.get("schema", {})
    for option in schema.get("anyOf") or [schema]:
        if option.get("type") in {"integer", "string"}:
            return str(option["type"]), list(option.get("enum") or [])
    return "string", []


def _valid(param: dict[str, Any]) -> Any:
    kind, enum = _kind(param)
    if enum:
        return enum[0]
    return 1 if kind == "integer" else "x"


def edge_cases(raw: dict[str, Any], operation: Operation) -> Iterator[AnyCase]:
    """One case per (parameter, edge value); the other required parameters are valid."""
    params = _parameters(raw, operation)
    for param in params:
        kind, enum = _kind(param)
        if enum:
            continue
        for value in EDGE_INTEGERS if kind == "integer" else EDGE_STRINGS:
            chosen = {p["name"]: _valid(p) for p in params if p.get("required")}
            chosen[param["name"]] = value
            path = {p["name"]: chosen[p["name"]] for p in params if p["in"] == "path"}
            query = {
                p["name"]: chosen[p["name"]]
                for p in params
                if p["in"] == "query" and p["name"] in chosen
            }
            yield operation.Case(path_parameters=path, query=query)


def credentials_meant(case: AnyCase) -> bool:
    """Whether ``case`` is meant to carry credentials. Schemathesis gives the cases of an
    operation that declares bearer authentication a made-up ``Authorization`` header, which
    a valid token replaces; one without it is about the missing credentials, and must go
    without. Our edge cases and operations that declare none get the token (it is harmless
    where it is not needed)."""
    secured = bool(case.operation.definition.raw.get("security"))
    has_header = any(name.lower() == "authorization" for name in case.headers or {})
    return case.meta is None or not secured or has_header


async def send(client: httpx.AsyncClient, case: AnyCase, token: str | None) -> httpx.Response:
    """Send a schemathesis case with httpx (with ``token``, if any): path parameters
    percent-encoded, bodies as ASCII JSON, headers as latin-1.

    Generated path parameters come percent-encoded already, edge cases' do not: quoting
    is made idempotent the way schemathesis does it (unquote, then quote), so the server
    sees the value drawn, not its encoding."""
    base = str(client.base_url).rstrip("/")
    kw = case.as_transport_kwargs(base_url=base, headers=auth(token) if token else None)
    params = {k: quote(unquote(str(v)), safe="") for k, v in (case.path_parameters or {}).items()}
    url = base + case.operation.path.format_map(params)
    content: bytes | None = None
    if "json" in kw:
        content = json.dumps(kw["json"]).encode()
    elif kw.get("data") is not None:
        data = kw["data"]
        content = data if isinstance(data, bytes) else str(data).encode()
    headers = {
        k: v.encode("latin-1") if isinstance(v, str) else v for k, v in kw["headers"].items()
    }
    return await client.request(
        kw["method"], url, params=kw.get("params"), headers=headers, content=content
    )


def failed_checks(
    case: AnyCase, response: httpx.Response, token: str | None, checks: list[CheckFunction]
) -> list[Failure]:
    """What ``checks`` find wrong with the answer to ``case`` (sent with ``token``, which
    the probing checks take away or spoil)."""
    base_url = str(response.request.url.copy_with(path="/", query=None)).rstrip("/")
    try:
        case.validate_response(
            response,
            checks=checks,
            headers=auth(token) if token else None,
            transport_kwargs={"base_url": base_url},
        )
    except FailureGroup as group:
        return list(group.exceptions)
    except Failure as failure:
        return [failure]
    return []


def checks_for(operation: Operation, names: frozenset[str] | set[str]) -> list[CheckFunction]:
    """The checks of ``names`` that apply to ``operation``."""
    excluded = EXCLUDED.get(operation.label, {})
    return [ALL_CHECKS[name] for name in sorted(names) if name not in excluded]


def describe(service: str, operation: Operation, why: str, response: httpx.Response) -> str:
    """One violation: what is wrong, the request and the start of the answer."""
    sent = response.request
    body = sent.content[:200].decode(errors="replace")
    return (
        f"{service} {operation.label}: {why}\n  {sent.method} {sent.url} {body}\n"
        f"  -> {response.status_code} {response.text[:200]}"
    )


async def fuzz_service(target: Target, service: str) -> list[str]:
    """Send every case of every operation of ``service``, check every answer with all of
    schemathesis' checks and the problem contract; returns the violations."""
    client = target.clients[service]

    async def ready() -> bool:
        return (await client.get("/readyz")).status_code == 200

    # A service still starting says so with 503; once ready, a 503 anywhere is a failure.
    await eventually(ready, timeout=60, what=f"{service} ready")
    raw = (await client.get("/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(raw)
    failures: list[str] = []
    for result in schema.get_all_operations():
        if not hasattr(result, "ok"):  # an operation the schema itself gets wrong
            failures.append(f"{service}: unusable operation {result!r}")
            continue
        operation = result.ok()
        target.operations[service] += 1
        in_loop = checks_for(operation, set(ALL_CHECKS) - PROBING)
        probing = checks_for(operation, PROBING)
        found: dict[str, str] = {}  # one request per distinct violation
        cases = [*coverage_cases(operation), *fuzz_cases(operation), *edge_cases(raw, operation)]
        for case in cases:
            token = target.next_token() if credentials_meant(case) else None
            try:
                response = await send(client, case, token)
            except UNSENDABLE:
                target.unsendable[service] += 1
                continue
            target.requests[service] += 1
            target.answers[(service, response.status_code)] += 1
            why = problem_violation(response)
            failures_ = failed_checks(case, response, token, in_loop)
            if probing and token and response.is_success:
                failures_ += await asyncio.to_thread(failed_checks, case, response, token, probing)
                target.probed[service] += 1
                probing = []
            reasons = [why] if why else []
            reasons += [f"[{', '.join(f.checks)}] {f.title}: {f.message}" for f in failures_]
            for reason in reasons:
                key = reason.split("\n")[0]
                if key not in found and len(found) < MAX_FAILURES_PER_OPERATION:
                    found[key] = describe(service, operation, reason, response)
        failures += found.values()
    return failures


@pytest.mark.parametrize("service", SERVICES)
async def test_no_operation_answers_5xx_or_a_4xx_without_a_problem(
    target: Target, service: str
) -> None:
    failures = await fuzz_service(target, service)
    summary = target.summary(service)
    log.info("%s", summary)
    assert target.operations[service] >= 3, summary
    assert not failures, f"{summary}\n{len(failures)} violations:\n" + "\n".join(failures)


# ---------------------------------------------------------------- the bugs, one request each


async def _call(target: Target, service: str, method: str, path: str, **kw: Any) -> httpx.Response:
    client = target.clients[service]
    return await client.request(method, path, headers=auth(target.tokens[0]), **kw)


def _assert_problem(resp: httpx.Response, *statuses: int) -> None:
    why = problem_violation(resp)
    assert why is None, f"{resp.request.method} {resp.request.url}: {why} -> {resp.text[:200]}"
    assert resp.status_code in statuses, resp.text


@pytest.mark.parametrize("action", ["approve", "reject", "recall"])
async def test_request_ids_past_64_bits_are_refused_not_500(target: Target, action: str) -> None:
    """``request_id: int`` is unbounded in FastAPI; the database column is 64-bit."""
    body = {"reason": "no"} if action == "reject" else None
    resp = await _call(target, "registry", "POST", f"/v1/requests/{2**63}/{action}", json=body)
    _assert_problem(resp, 404, 422)


@pytest.mark.parametrize("path", ["/v1/records/{n}", "/v1/records/{n}/revisions", "/v1/verify/{n}"])
async def test_numeric_document_ids_past_64_bits_are_unknown_not_500(
    target: Target, path: str
) -> None:
    """A bare number is looked up as a documentID [C7] without a bound."""
    resp = await _call(target, "registry", "GET", path.format(n=2**63))
    if path.startswith("/v1/verify"):
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "unknown"
    else:
        _assert_problem(resp, 404)


@pytest.mark.parametrize(
    ("service", "path"), [("checkpoint", "/v1/communiques"), ("monitor", "/v1/discrepancies")]
)
async def test_paging_offsets_past_64_bits_are_refused_not_500(
    target: Target, service: str, path: str
) -> None:
    """``offset`` has ``ge=0`` but no upper bound; SQL OFFSET is a signed 64-bit integer."""
    _assert_problem(await _call(target, service, "GET", path, params={"offset": 2**63}), 422)


@pytest.mark.parametrize(
    ("service", "method", "path", "params"),
    [
        ("registry", "GET", "/v1/search", {"q": "a\x00b"}),
        ("registry", "GET", "/v1/search", {"schema": "a\x00b"}),
        ("registry", "POST", "/v1/records/contact/a%00b/publish", None),
        ("checkpoint", "GET", "/v1/communiques/a%00b", None),
        ("notifier", "GET", "/v1/deliveries", {"subject": "a\x00b"}),
        ("monitor", "GET", "/v1/discrepancies", {"rule": "a\x00b"}),
        ("monitor", "GET", "/v1/discrepancies/a%00b", None),
        ("monitor", "POST", "/v1/discrepancies/a%00b/acknowledge", None),
    ],
    ids=[
        "registry-search-q",
        "registry-search-schema",
        "registry-publish",
        "checkpoint-get",
        "notifier-deliveries",
        "monitor-list",
        "monitor-get",
        "monitor-act",
    ],
)
async def test_nul_characters_in_parameters_are_not_500(
    target: Target, service: str, method: str, path: str, params: dict[str, str] | None
) -> None:
    """PostgreSQL text cannot hold NUL (asyncpg raises); SQLite can."""
    resp = await _call(target, service, method, path, params=params)
    _assert_problem(resp, 200, 403, 404, 422)


async def test_nul_characters_in_a_user_name_are_not_500(target: Target) -> None:
    """``UserCreate.name`` goes to a text column."""
    body = {"name": "a\x00b", "email": "nul@mx.example", "role": "admin"}
    _assert_problem(await _call(target, "registry", "POST", "/v1/users", json=body), 201, 422)


async def test_a_draft_accepted_with_a_nul_character_can_be_published(target: Target) -> None:
    """A contact whose organization holds NUL is saved; publishing it must not fail (its
    search text goes to a text column): refuse it at the draft, or publish it."""
    contact = rec.contact(["nul@mx.example"], gov="mx", organization={"en": "Bio\x00Lab"})
    url = f"/v1/records/contact/{contact['header']['identifier']}"
    client, pa = target.clients["registry"], auth(target.tokens[1])
    saved = await client.put(url, json=contact, headers=pa)
    _assert_problem(saved, 200, 422)
    if saved.status_code == 200:
        _assert_problem(await client.post(f"{url}/publish", headers=pa), 200)


@pytest.mark.parametrize(
    ("service", "method", "path", "allow"),
    [
        ("checkpoint", "DELETE", "/v1/communiques", "GET, POST"),
        ("checkpoint", "OPTIONS", "/v1/communiques", "GET, POST"),
        ("registry", "PATCH", "/v1/records/absPermit/T-0000000000001", "PUT"),
        # Not a draft ``revisions`` of a schema ``0``: a record's history, GET only.
        ("registry", "PUT", "/v1/records/0/revisions", "GET"),
        ("monitor", "GET", "/v1/discrepancies/x/acknowledge", "POST"),
        ("notifier", "POST", "/v1/deliveries", "GET"),
    ],
)
async def test_a_405_lists_every_method_of_the_resource_in_allow(
    target: Target, service: str, method: str, path: str, allow: str
) -> None:
    """RFC 9110: a 405 carries ``Allow``; Starlette named only the first matching route's
    methods (``POST`` alone for ``/v1/communiques``), or none at all through the problem
    handler."""
    resp = await _call(target, service, method, path)
    _assert_problem(resp, 405)
    assert resp.headers.get("allow") == allow, resp.headers


def assert_utc(value: object, what: str) -> None:
    """``value`` is RFC 3339 text in UTC, with its offset (``Z``, or ``+00:00``)."""
    assert isinstance(value, str), f"{what}: {value!r}"
    assert value.endswith(("Z", "+00:00")), f"{what} has no UTC offset: {value!r}"
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0), f"{what}: {value!r}"


async def test_every_timestamp_answered_is_utc_with_an_offset(target: Target) -> None:
    """Stored in UTC and handed back naive by SQLite, timestamps must still answer as
    ``date-time`` (RFC 3339, with an offset): a revision, a request and its notification, a
    new user's token, a communiqué, the deliveries about an IRCC and a discrepancy."""
    reg, admin = target.clients["registry"], target.tokens[0]
    created = await reg.post(
        "/v1/users",
        json={"name": "NFP", "email": "nfp-utc@pe.example", "role": "nfp", "government": "pe"},
        headers=auth(ADMIN_TOKEN),
    )
    assert created.status_code == 201, created.text
    for key, value in created.json().items():
        if key.endswith("_at"):
            assert_utc(value, f"user {key}")
    nfp = str(created.json()["token"])
    pe = {role: await create_user(reg, nfp, role, "pe") for role in ("pa", "nau", "cna")}
    cna = rec.authority("pe", ["cna@pe.example"])
    await publish(reg, pe["pa"], cna)
    ircc = rec.permit("pe", cna["header"]["identifier"])
    uid = str((await publish(reg, pe["pa"], ircc))["uid"])
    revisions = await reg.get(f"/v1/records/{uid}/revisions")
    assert revisions.status_code == 200, revisions.text
    assert_utc(revisions.json()[0]["publishedAt"], "publishedAt")

    # An NAU's publication is a request; the PA is notified of it.
    draft = rec.permit("pe", cna["header"]["identifier"])
    url = f"/v1/records/absPermit/{draft['header']['identifier']}"
    assert (await reg.put(url, json=draft, headers=auth(pe["nau"]))).status_code == 200
    assert (await reg.post(f"{url}/publish", headers=auth(pe["nau"]))).status_code == 200
    for path in ("/v1/requests", "/v1/notifications"):
        listed = await reg.get(path, headers=auth(pe["pa"]))
        assert listed.status_code == 200, listed.text
        assert listed.json(), path
        assert_utc(listed.json()[0]["createdAt"], f"{path} createdAt")

    # Revoked, then cited by a communiqué: the monitor flags IRCC_REVOKED.
    revoke = await reg.post(
        f"/v1/records/absPermit/{ircc['header']['identifier']}/revoke",
        json={"reason": {"en": "withdrawn"}},
        headers=auth(pe["pa"]),
    )
    assert revoke.status_code == 200, revoke.text
    cl = await government_users(reg, "cl")
    checkpoint = rec.checkpoint("cl")
    await publish(reg, cl["pa"], checkpoint)
    operator = await create_user(
        reg, cl["pa"], "checkpoint", "cl", checkpoint=checkpoint["header"]["identifier"]
    )
    cpc = communique(
        "cl", [checkpoint["header"]["identifier"]], irccs=[ircc["header"]["identifier"]]
    )

    async def submitted() -> httpx.Response | None:
        resp = await target.clients["checkpoint"].post(
            "/v1/communiques", json=cpc, headers=auth(operator)
        )
        # 422 until the checkpoint service has read the checkpoint from the directory.
        return None if resp.status_code == 422 and "absCheckpoints" in resp.text else resp

    sent = await eventually(submitted, what="the communiqué accepted")
    assert sent.status_code == 201, sent.text
    cpc_uid = sent.json()["uid"]
    read = await target.clients["checkpoint"].get(f"/v1/communiques/{cpc_uid}")
    assert read.status_code == 200, read.text
    assert_utc(read.json()["created_at"], "communiqué created_at")

    async def flagged() -> list[dict[str, Any]] | None:
        resp = await target.clients["monitor"].get(
            "/v1/discrepancies", params={"user": "cl"}, headers=auth(admin)
        )
        items = [c for c in resp.json()["items"] if c["cpc_uid"] == cpc_uid]
        return items or None

    for case in await eventually(flagged, what="a discrepancy about the communiqué"):
        assert_utc(case["flagged_at"], "flagged_at")
        assert_utc(case["updated_at"], "updated_at")
        for entry in case["history"]:
            assert_utc(entry["at"], "history at")

    async def mailed() -> list[dict[str, Any]] | None:
        resp = await target.clients["notifier"].get(
            "/v1/deliveries", params={"subject": uid}, headers=auth(admin)
        )
        rows = [r for r in resp.json() if r["sent_at"] is not None]
        return rows or None

    for row in await eventually(mailed, what="deliveries about the IRCC sent"):
        assert_utc(row["created_at"], "delivery created_at")
        assert_utc(row["sent_at"], "delivery sent_at")
