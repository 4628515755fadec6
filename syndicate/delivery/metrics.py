"""Prometheus metrics of delivery: outcomes, attempt latency, queue depth (served on
``/metrics`` by web.routes.metrics)."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

from storage.records import DeliveryOutcome
from syndicate.core.names import DELIVERY_STATUSES

if TYPE_CHECKING:
    from syndicate.delivery.sender import Attempt

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0)


class Metrics:
    """One registry per app, so several apps (tests, workers) never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.deliveries = Counter(
            "syndicate_deliveries_total",
            "Delivery attempts by outcome (delivered, failed, dead).",
            ["outcome"],
            registry=self.registry,
        )
        self.attempt_seconds = Histogram(
            "syndicate_delivery_attempt_seconds",
            "Time from request start to response (or error) per delivery attempt.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.pending = Gauge(
            "syndicate_deliveries_pending",
            "Deliveries not yet delivered (pending or waiting for a retry).",
            registry=self.registry,
        )
        self.due = Gauge("syndicate_deliveries_due", "Deliveries due now.", registry=self.registry)
        self.oldest_pending_age = Gauge(
            "syndicate_oldest_pending_delivery_age_seconds",
            "Age of the oldest undelivered delivery (0 when none).",
            registry=self.registry,
        )
        for outcome in DELIVERY_STATUSES:
            if outcome == "pending":  # not an outcome of an attempt
                continue
            self.deliveries.labels(outcome)

    def observe_attempt(self, attempt: Attempt) -> None:
        self.attempt_seconds.observe(attempt.latency_ms / 1000)

    def count_outcomes(self, outcomes: Sequence[DeliveryOutcome]) -> None:
        for status, count in collections.Counter(o.status for o in outcomes).items():
            self.deliveries.labels(status).inc(count)
