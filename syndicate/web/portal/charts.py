"""Charts for the operator's dashboard, drawn on the server as inline SVG: the page
stays script-free and loads nothing from elsewhere (the CSP allows neither).

Pure functions, counts in and markup out. Every text is escaped; colours come from
classes in the portal's stylesheet (no ``style`` attribute: the CSP forbids inline
style). The chart is an image with a title and a description for screen readers;
the page shows the same numbers as a table beside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from markupsafe import Markup, escape

from storage.records import AttemptCount

#: The outcomes stacked in a bar, bottom first (the delivery states an attempt ends in).
OUTCOMES: Final = ("delivered", "failed", "dead")
#: A bar for an outcome not listed above (none is expected; never dropped silently).
OTHER: Final = "other"
EMPTY_NOTE: Final = "No attempts in the last hour"

WIDTH: Final = 720
HEIGHT: Final = 220
_LEFT: Final = 44
_RIGHT: Final = 8
_TOP: Final = 12
_BOTTOM: Final = 28
PLOT_HEIGHT: Final = HEIGHT - _TOP - _BOTTOM
PLOT_WIDTH: Final = WIDTH - _LEFT - _RIGHT
_BASELINE: Final = HEIGHT - _BOTTOM


@dataclass
class Bucket:
    """The attempts of one time bucket, by outcome."""

    start: datetime
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def window_start(now: datetime, *, bucket_seconds: int = 60, buckets: int = 60) -> datetime:
    """The start of the first of ``buckets`` buckets that end with the one holding
    ``now`` (buckets start at multiples of ``bucket_seconds`` since the epoch, as
    ``Storage.count_attempts`` counts them)."""
    epoch = int(now.timestamp()) // bucket_seconds * bucket_seconds
    return datetime.fromtimestamp(epoch - (buckets - 1) * bucket_seconds, UTC)


def tally(
    counts: Iterable[AttemptCount], *, start: datetime, bucket_seconds: int = 60, buckets: int = 60
) -> list[Bucket]:
    """Every bucket of the window from ``start``, empty ones included, with the counts
    that fall in it (succeeded or not, by outcome). Counts outside the window are
    left out."""
    out = [Bucket(start + timedelta(seconds=i * bucket_seconds)) for i in range(buckets)]
    for count in counts:
        index = int((count.bucket - start).total_seconds()) // bucket_seconds
        if 0 <= index < buckets and count.count > 0:
            outcome = count.outcome if count.outcome in OUTCOMES else OTHER
            bucket = out[index]
            bucket.counts[outcome] = bucket.counts.get(outcome, 0) + count.count
    return out


def series(buckets: Sequence[Bucket]) -> list[str]:
    """The outcomes a chart of ``buckets`` shows: the usual ones, and ``other`` when
    an attempt had an outcome none of them names."""
    extra = [OTHER] if any(OTHER in b.counts for b in buckets) else []
    return [*OUTCOMES, *extra]


def scale_max(highest: int) -> int:
    """The top of the y axis: ``highest`` rounded up to 1, 2 or 5 times a power of ten."""
    if highest <= 0:
        return 1
    step = 1
    while True:
        for factor in (1, 2, 5):
            if highest <= step * factor:
                return step * factor
        step *= 10


def bar_height(count: int, top: int) -> float:
    """How tall a count is drawn on an axis running to ``top``."""
    return round(count * PLOT_HEIGHT / top, 2)


def _num(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text or "0"


def _clock(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%H:%M")


def _summary(buckets: Sequence[Bucket], shown: Sequence[str]) -> str:
    total = sum(b.total for b in buckets)
    if total == 0:
        return f"{EMPTY_NOTE}."
    parts = ", ".join(f"{sum(b.counts.get(o, 0) for b in buckets)} {o}" for o in shown)
    busiest = max(b.total for b in buckets)
    noun = "attempt" if total == 1 else "attempts"
    return (
        f"{total} {noun} from {_clock(buckets[0].start)} to the current minute (UTC): "
        f"{parts}; at most {busiest} in one minute."
    )


def attempts_chart(
    buckets: Sequence[Bucket], *, title: str, id_prefix: str = "attempts-chart"
) -> Markup:
    """A stacked bar chart of attempts per bucket by outcome, as an ``<svg>`` element
    (role img, labelled by its own ``<title>`` and ``<desc>``). Each bar segment
    carries a ``<title>`` with its time and count. No attempts: empty axes and a note."""
    shown = series(buckets)
    top = scale_max(max((b.total for b in buckets), default=0))
    title_id, desc_id = f"{id_prefix}-title", f"{id_prefix}-desc"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-labelledby="{escape(title_id)} {escape(desc_id)}">',
        f'<title id="{escape(title_id)}">{escape(title)}</title>',
        f'<desc id="{escape(desc_id)}">{escape(_summary(buckets, shown))}</desc>',
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_BASELINE}"/>',
        f'<line class="axis" x1="{_LEFT}" y1="{_BASELINE}" x2="{WIDTH - _RIGHT}" '
        f'y2="{_BASELINE}"/>',
        f'<text x="{_LEFT - 6}" y="{_TOP + 4}" text-anchor="end">{top}</text>',
        f'<text x="{_LEFT - 6}" y="{_BASELINE}" text-anchor="end">0</text>',
    ]
    slot = PLOT_WIDTH / max(len(buckets), 1)
    for index, bucket in enumerate(buckets):
        x = _LEFT + index * slot
        if index == len(buckets) - 1:  # the last ends at the right edge: not cut off
            parts.append(
                f'<text x="{_num(x + slot)}" y="{HEIGHT - 8}" text-anchor="end">'
                f"{escape(_clock(bucket.start))}</text>"
            )
        elif index % 10 == 0 and index < len(buckets) - 5:
            parts.append(
                f'<text x="{_num(x)}" y="{HEIGHT - 8}">{escape(_clock(bucket.start))}</text>'
            )
        y = float(_BASELINE)
        for outcome in shown:
            count = bucket.counts.get(outcome, 0)
            if not count:
                continue
            height = bar_height(count, top)
            y -= height
            label = f"{_clock(bucket.start)} UTC: {count} {outcome}"
            parts.append(
                f'<rect class="bar {escape(outcome)}" x="{_num(x + slot * 0.1)}" y="{_num(y)}" '
                f'width="{_num(slot * 0.8)}" height="{_num(height)}">'
                f"<title>{escape(label)}</title></rect>"
            )
    if all(b.total == 0 for b in buckets):
        parts.append(
            f'<text class="empty" x="{_LEFT + PLOT_WIDTH // 2}" y="{_TOP + PLOT_HEIGHT // 2}" '
            f'text-anchor="middle">{escape(EMPTY_NOTE)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
