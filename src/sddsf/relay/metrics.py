"""Prometheus metrics of one relay app (own registry: no process globals).

Names follow Prometheus conventions (base units, ``_total`` counters, an
``_info`` gauge for the build); docs/operations.md lists each with its labels
and a test checks that the list and this module agree. Label values are
bounded: routes are templates (``unmatched`` for no route), methods outside
the usual ones are ``other``.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from typing import Any, Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from sddsf._version import __version__

__all__ = ["RelayMetrics"]

_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_BUCKETS: Final = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)


class _PoolCollector(Collector):
    """``sddsf_db_pool_connections{state}`` for a storage with a connection pool
    (PostgreSQL: asyncpg's ``Pool`` and its public size methods); nothing for
    one without (SQLite: one worker thread, no pool)."""

    def __init__(self, pool: Callable[[], Any]) -> None:
        self.pool = pool

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pool = self.pool()
        if pool is None or not hasattr(pool, "get_size"):
            return
        family = GaugeMetricFamily("sddsf_db_pool_connections",
                                   "Database pool connections by state", labels=["state"])
        size, idle = int(pool.get_size()), int(pool.get_idle_size())
        family.add_metric(["in_use"], size - idle)
        family.add_metric(["idle"], idle)
        family.add_metric(["max"], int(pool.get_max_size()))
        yield family


class RelayMetrics:
    """Counters, gauges and histograms exposed at ``/metrics``."""

    def __init__(self, connected: Callable[[], int],
                 pool: Callable[[], Any] = lambda: None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ops = Counter("sddsf_ops_total", "Ops by result and rejection code",
                           ["result", "code"], registry=r)
        self.latency = Histogram("sddsf_http_request_duration_seconds",
                                 "HTTP request duration, by method, route template and status",
                                 ["method", "route", "status"], registry=r, buckets=_BUCKETS)
        self.server_errors = Counter("sddsf_http_server_errors_total",
                                     "HTTP answers with a 5xx status",
                                     ["method", "route", "status"],
                                     registry=r)
        self.rate_limited = Counter("sddsf_rate_limited_total", "Requests refused by a rate "
                                    "limit, by bucket kind", ["bucket"], registry=r)
        self.connected = Gauge("sddsf_websocket_connections", "Open WebSocket connections",
                               registry=r)
        self.connected.set_function(lambda: float(connected()))
        self.build = Info("sddsf_build", "The relay's version and Python", registry=r)
        self.build.info({"version": __version__,
                         "python": platform.python_version(),
                         "implementation": platform.python_implementation()})
        r.register(_PoolCollector(pool))
        # The default collectors of prometheus_client, on this registry.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        r.register(GC_COLLECTOR)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one answered HTTP request."""
        method = method if method in _METHODS else "other"
        self.latency.labels(method, route, str(status)).observe(seconds)
        if status >= 500:
            self.server_errors.labels(method, route, str(status)).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
