"""Prometheus metrics for operators: deliveries, the inbox, runs and upstream calls.

Each app has its own registry (no process-global state), served at `GET /metrics`.
Endpoint labels are path templates, never raw paths, so ids do not explode cardinality.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from bot.models import RunState

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_REPO_PATH = re.compile(r"^/repos/[^/]+/[^/]+")
_NUMBER = re.compile(r"/\d+(?=/|$)")
_SHA = re.compile(r"/[0-9a-f]{40}(?=/|$)")
_BOX_ID = re.compile(r"/bx_[a-z0-9]+")
_PROMPT_ID = re.compile(r"/prompts/[^/]+")
_CONTENT_PATH = re.compile(r"/contents/.*$")
_USER = re.compile(r"/(collaborators|users)/[^/]+")


def github_endpoint(path: str) -> str:
    """Return the template of a GitHub API path (`/repos/{repo}/issues/{n}/comments`)."""
    path = path.split("?", 1)[0]
    path = re.sub(r"^https?://[^/]+", "", path)
    path = _REPO_PATH.sub("/repos/{repo}", path)
    path = _CONTENT_PATH.sub("/contents/{path}", path)
    path = _USER.sub(r"/\1/{user}", path)
    path = _SHA.sub("/{sha}", path)
    return _NUMBER.sub("/{n}", path)


def box_endpoint(path: str) -> str:
    """Return the template of a Box API path (`/boxes/{box}/events`)."""
    path = _BOX_ID.sub("/{box}", path.split("?", 1)[0])
    return _PROMPT_ID.sub("/prompts/{prompt}", path)


class Metrics:
    """The app's counters, gauges and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "box_bot_deliveries_received", "Webhook deliveries stored", ["event"], registry=r
        )
        self.processed = Counter(
            "box_bot_deliveries_processed",
            "Deliveries the worker finished, by outcome (done, ignored, retry, failed)",
            ["event", "outcome"],
            registry=r,
        )
        self.inbox = Gauge(
            "box_bot_inbox_deliveries",
            "Deliveries in the inbox by status",
            ["status"],
            registry=r,
        )
        self.runs = Gauge("box_bot_runs", "Runs by state", ["state"], registry=r)
        self.upstream_calls = Counter(
            "box_bot_upstream_calls",
            "Calls to GitHub and Box by endpoint and HTTP status (0: no answer)",
            ["service", "method", "endpoint", "status"],
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "box_bot_upstream_call_seconds",
            "Latency of calls to GitHub and Box",
            ["service", "method", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.token_refreshes = Counter(
            "box_bot_token_refreshes", "Installation tokens minted", registry=r
        )
        self.redeliveries = Counter(
            "box_bot_redeliveries_asked",
            "Deliveries GitHub was asked to send again after every attempt failed",
            registry=r,
        )

    def github_call(self, method: str, path: str, status: int, seconds: float) -> None:
        """Count one call to GitHub."""
        self._call("github", method, github_endpoint(path), status, seconds)

    def box_call(self, method: str, path: str, status: int, seconds: float) -> None:
        """Count one call to Box."""
        self._call("box", method, box_endpoint(path), status, seconds)

    def _call(self, service: str, method: str, endpoint: str, status: int, seconds: float) -> None:
        self.upstream_calls.labels(service, method, endpoint, str(status)).inc()
        self.upstream_seconds.labels(service, method, endpoint).observe(seconds)

    def redelivered(self, asked: int) -> None:
        """Count the redeliveries one look at the delivery log asked for."""
        self.redeliveries.inc(asked)

    def watch_instance(self, driving: Callable[[], int], taken_over: Callable[[], int]) -> None:
        """Serve this instance's share of the work, read at scrape time."""
        self.registry.register(InstanceWork(driving, taken_over))

    def set_counts(self, inbox: dict[str, int], runs: dict[str, int]) -> None:
        """Refresh the gauges read from the store at scrape time."""
        for status in ("pending", "processing", "done", "failed", "ignored"):
            self.inbox.labels(status).set(inbox.get(status, 0))
        for state in RunState:  # every state, so one that emptied reads 0, not its last count
            self.runs.labels(state.value).set(runs.get(state.value, 0))

    def exposition(self) -> bytes:
        """Return the metrics in Prometheus's text format."""
        return generate_latest(self.registry)


class InstanceWork(Collector):
    """The runs this instance drives now, and how many it took over from dead instances."""

    def __init__(self, driving: Callable[[], int], taken_over: Callable[[], int]) -> None:
        self.driving, self.taken_over = driving, taken_over

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "box_bot_runs_driven", "Runs this instance drives now", value=self.driving()
        )
        yield CounterMetricFamily(
            "box_bot_leases_taken_over",
            "Runs this instance took over after another instance's lease expired",
            value=self.taken_over(),
        )
