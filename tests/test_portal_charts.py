"""The dashboard's chart (syndicate/web/portal/charts.py): counts in, SVG out, read
back as XML the way a browser would draw it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from storage.records import AttemptCount
from syndicate.web.portal.charts import (
    EMPTY_NOTE,
    PLOT_HEIGHT,
    attempts_chart,
    scale_max,
    tally,
    window_start,
)

SVG = "{http://www.w3.org/2000/svg}"
NOW = datetime(2026, 5, 1, 12, 30, 42, tzinfo=UTC)
START = window_start(NOW)


def parse(markup: str) -> ET.Element:
    return ET.fromstring(markup)


def bars(svg: ET.Element) -> list[tuple[str, float, float, str]]:
    """(outcome, y, height, tooltip) of every bar segment."""
    found = []
    for rect in svg.iter(f"{SVG}rect"):
        outcome = rect.get("class", "").split()[-1]
        tip = rect.find(f"{SVG}title")
        assert tip is not None and tip.text
        found.append((outcome, float(rect.get("y", "")), float(rect.get("height", "")), tip.text))
    return found


def at(minute: int, outcome: str, count: int, succeeded: bool = False) -> AttemptCount:
    return AttemptCount(START + timedelta(minutes=minute), outcome, succeeded, count)  # type: ignore[arg-type]


def test_the_window_is_the_last_sixty_minutes_up_to_this_one() -> None:
    assert START == datetime(2026, 5, 1, 11, 31, tzinfo=UTC)
    buckets = tally([], start=START)
    assert len(buckets) == 60 and buckets[-1].start == datetime(2026, 5, 1, 12, 30, tzinfo=UTC)


def test_bar_heights_match_the_counts() -> None:
    counts = [at(0, "delivered", 8), at(0, "failed", 2), at(30, "dead", 1), at(59, "delivered", 4)]
    svg = parse(attempts_chart(tally(counts, start=START), title="Attempts"))
    top = scale_max(10)
    assert top == 10
    drawn = {(outcome, tip): height for outcome, _, height, tip in bars(svg)}
    assert drawn == {
        ("delivered", "11:31 UTC: 8 delivered"): PLOT_HEIGHT * 8 / top,
        ("failed", "11:31 UTC: 2 failed"): PLOT_HEIGHT * 2 / top,
        ("dead", "12:01 UTC: 1 dead"): PLOT_HEIGHT * 1 / top,
        ("delivered", "12:30 UTC: 4 delivered"): PLOT_HEIGHT * 4 / top,
    }
    # Stacked: the failed segment sits right on top of the delivered one.
    first = {o: (y, h) for o, y, h, tip in bars(svg) if tip.startswith("11:31")}
    assert abs(first["failed"][0] + first["failed"][1] - first["delivered"][0]) < 0.02
    # The tallest bar (10) reaches the top of the axis, which is labelled 10.
    labels = [t.text for t in svg.iter(f"{SVG}text")]
    assert "10" in labels and "0" in labels and EMPTY_NOTE not in labels


def test_succeeded_and_failed_attempts_of_one_outcome_add_up() -> None:
    counts = [at(5, "failed", 3, succeeded=False), at(5, "failed", 2, succeeded=True)]
    (bucket,) = [b for b in tally(counts, start=START) if b.total]
    assert bucket.counts == {"failed": 5}


def test_no_attempts_draw_an_empty_chart_with_a_note() -> None:
    svg = parse(attempts_chart(tally([], start=START), title="Attempts"))
    assert bars(svg) == []
    assert EMPTY_NOTE in [t.text for t in svg.iter(f"{SVG}text")]
    desc = svg.find(f"{SVG}desc")
    assert desc is not None and desc.text == f"{EMPTY_NOTE}."


def test_the_chart_is_a_labelled_image() -> None:
    svg = parse(attempts_chart(tally([at(1, "delivered", 1)], start=START), title="Attempts"))
    assert svg.get("role") == "img"
    title, desc = svg.find(f"{SVG}title"), svg.find(f"{SVG}desc")
    assert title is not None and desc is not None
    assert svg.get("aria-labelledby") == f"{title.get('id')} {desc.get('id')}"
    expected = (
        "1 attempt from 11:31 to the current minute (UTC): "
        "1 delivered, 0 failed, 0 dead; at most 1 in one minute."
    )
    assert desc.text == expected
    assert all("style" not in el.attrib for el in svg.iter())


def test_text_is_escaped_and_unknown_outcomes_are_shown() -> None:
    markup = attempts_chart(
        tally([at(2, "pending", 3)], start=START), title='<script>"x"</script>', id_prefix="a&b"
    )
    assert "<script>" not in markup
    svg = parse(markup)
    title = svg.find(f"{SVG}title")
    assert title is not None and title.text == '<script>"x"</script>'
    assert [(o, tip) for o, _, _, tip in bars(svg)] == [("other", "11:33 UTC: 3 other")]


def test_counts_outside_the_window_are_left_out() -> None:
    early = AttemptCount(START - timedelta(minutes=1), "delivered", True, 7)
    assert all(b.total == 0 for b in tally([early], start=START))


def test_the_axis_top_is_a_round_number() -> None:
    assert [scale_max(n) for n in (0, 1, 2, 3, 6, 11, 20, 21, 99, 501)] == [
        1,
        1,
        2,
        5,
        10,
        20,
        20,
        50,
        100,
        1000,
    ]
