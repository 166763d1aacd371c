"""Basic service metrics: request counts by route and status class, latency quantiles of recent requests."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

import numpy as np

WINDOW = 2048  # latencies kept per route for the quantiles
MAX_LABELS = 256  # route labels kept; any further label is counted as OVERFLOW
OVERFLOW = "overflow"


class Metrics:
    """Thread-safe counters. ``observe(route, status, seconds)`` per request; ``snapshot()`` -> JSON dict.

    Latency quantiles are over the last ``WINDOW`` requests of each route (server-side time, from
    the request reaching the app to the response being produced). The table is bounded: callers
    pass labels from a bounded set (:func:`gcl.service.middleware.route_label`), and past
    ``MAX_LABELS`` distinct labels any new one is counted as ``OVERFLOW``, so neither memory nor
    the ``/metrics`` body grows with what clients send.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started = time.time()
        self._counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._latency: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=WINDOW))
        self._total_seconds: dict[str, float] = defaultdict(float)

    def observe(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            if route not in self._counts and len(self._counts) >= MAX_LABELS:
                route = OVERFLOW
            self._counts[route][f"{min(max(status // 100, 1), 5)}xx"] += 1
            self._latency[route].append(seconds)
            self._total_seconds[route] += seconds

    def snapshot(self) -> dict:
        with self._lock:
            routes = {}
            for route, counts in sorted(self._counts.items()):
                lat = np.asarray(self._latency[route], dtype=np.float64) * 1000.0
                n = sum(counts.values())
                routes[route] = {
                    "requests": n,
                    "by_status": dict(sorted(counts.items())),
                    "mean_ms": round(self._total_seconds[route] * 1000.0 / n, 3) if n else None,
                    "p50_ms": round(float(np.percentile(lat, 50)), 3) if len(lat) else None,
                    "p99_ms": round(float(np.percentile(lat, 99)), 3) if len(lat) else None,
                    "window": int(len(lat)),
                }
            return {"uptime_s": round(time.time() - self._started, 3), "routes": routes}
