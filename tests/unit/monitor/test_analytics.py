"""The pure counting rules of the utilization analytics (no broker, no faust)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from services.monitor.analytics import alerts
from services.monitor.analytics import counting as cnt
from services.monitor.analytics.readmodel import Row, UtilizationView
from shared.events import decode_event

AT = datetime(2026, 1, 20, tzinfo=UTC)


def _citation(uid: str = "ABSCH-CPC-DE-1-1", user: str = "de", at: datetime = AT) -> cnt.Citation:
    return cnt.Citation(cpc_uid=uid, user=user, ircc="I1", checkpoints=["CP"], at=at, provider="mx")


def _fold(
    c: cnt.Citation,
    offset: int,
    state: dict[str, object],
    grace: timedelta = timedelta(days=3),
) -> cnt.Step:
    step = cnt.count_citation(
        c,
        offset,
        counted=state.get(c.key),  # type: ignore[arg-type]
        month=cnt.MonthCounts.load(state.get("month")),  # type: ignore[arg-type]
        provider=cnt.ProviderState.load(state.get("provider")),  # type: ignore[arg-type]
        grace=grace,
    )
    if step.month is not None:
        state["month"] = step.month.dump()
    if step.provider is not None:
        state["provider"] = step.provider.dump()
    if step.counted is not None:
        state[c.key] = step.counted
    return step


def test_months_are_calendar_months() -> None:
    assert cnt.month_window("2026-12") == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert cnt.month_of(datetime(2026, 2, 28, 23, 59, tzinfo=UTC)) == "2026-02"


def test_a_citation_counts_once_whatever_copy_or_replay() -> None:
    state: dict[str, object] = {}
    first = _fold(_citation(), 0, state)
    assert first.first_use is not None
    assert _fold(_citation(), 7, state) == cnt.Step()  # another copy, another offset
    again = _fold(_citation(), 0, state)  # the same message replayed
    assert again.month is None
    assert again.provider is None
    assert again.first_use == first.first_use  # its alert is sent again, same id
    assert state["month"]["cells"] == {"de|I1": 1}  # type: ignore[index]


def test_a_replay_completes_what_a_crash_left_half_written() -> None:
    state: dict[str, object] = {}
    _fold(_citation(), 0, state)
    lost = dict(state)
    del lost["provider"]  # its changelog message never reached the broker
    step = _fold(_citation(), 0, lost)
    assert step.month is None
    assert step.provider is not None
    assert lost["month"] == state["month"]


def test_a_month_report_goes_out_once_the_watermark_passes_its_grace() -> None:
    state: dict[str, object] = {}
    _fold(_citation(), 0, state)
    early = _fold(_citation("ABSCH-CPC-FR-2-1", "fr", datetime(2026, 2, 2, tzinfo=UTC)), 1, state)
    assert early.reports == []
    late = _fold(_citation("ABSCH-CPC-FR-3-1", "fr", datetime(2026, 2, 5, tzinfo=UTC)), 2, state)
    assert late.reports == ["2026-01"]
    assert late.first_use is None  # fr was first at offset 1


def test_alert_ids_are_derived_from_what_they_are_about() -> None:
    counts = cnt.MonthCounts(cells={"de|I1": 2, "fr|I1": 1, "de|I2": 1}, discrepancies={"X": 1})
    one, two = (alerts.report_event("mx", "2026-01", counts) for _ in range(2))
    assert one.id == two.id
    assert one.id != alerts.report_event("mx", "2026-02", counts).id
    back = decode_event(one.to_json_bytes())
    assert back.data.users == {"de": 3, "fr": 1}
    assert back.data.citations == 4
    assert [(i.ircc, i.citations) for i in back.data.irccs] == [("I1", 3), ("I2", 1)]


def test_the_read_model_keeps_the_latest_entry_per_key_and_filters() -> None:
    view = UtilizationView("unused:9092", "t-months-changelog")
    jan = cnt.MonthCounts(applied=3, cells={"de|I1": 2, "fr|I2": 1})
    view.apply(b'"mx|2026-01"', json.dumps(cnt.MonthCounts(applied=1).dump()).encode())
    view.apply(b'"mx|2026-01"', json.dumps(jan.dump()).encode())
    view.apply(b'"br|2026-02"', json.dumps(cnt.MonthCounts(0, {"de|I9": 4}).dump()).encode())
    assert [r.citations for r in view.rows()] == [4, 2, 1]
    assert view.rows(provider="mx", user="fr") == [Row("mx", "2026-01", "fr", "I2", 1)]
    assert view.rows(start="2026-02") == [Row("br", "2026-02", "de", "I9", 4)]
    assert view.rows(end="2026-01", ircc="I1") == [Row("mx", "2026-01", "de", "I1", 2)]
    view.apply(b'"br|2026-02"', None)  # a deleted entry
    assert {r.provider for r in view.rows()} == {"mx"}
