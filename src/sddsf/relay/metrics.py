"""Prometheus metrics of one relay app (own registry: no process globals)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

__all__ = ["RelayMetrics"]


class RelayMetrics:
    """Counters and histograms exposed at ``/metrics``."""

    def __init__(self, connected: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.ops = Counter("sddsf_ops_total", "Ops by result and rejection code",
                           ["result", "code"], registry=self.registry)
        self.latency = Histogram("sddsf_request_seconds", "Request latency",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1,
                                          2.5, 5))
        self.rate_limited = Counter("sddsf_rate_limited_total", "Requests refused by a rate "
                                    "limit, by bucket kind", ["bucket"], registry=self.registry)
        self.connected = Gauge("sddsf_connected_devices", "Open WebSocket connections",
                               registry=self.registry)
        self.connected.set_function(lambda: float(connected()))

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
