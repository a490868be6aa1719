"""Prometheus metrics for operators: deliveries, the inbox, runs, spend, upstream calls, the
process.

Each app has its own registry, served at `GET /metrics`. Endpoint labels are path templates,
never raw paths, so ids do not explode cardinality. Counters have no `_created` twin: that
switch is the client library's and process-wide, so importing this module turns it off.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from bot.models import RunState

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# From a quick answer to the longest a box may work (BOX_MAX_RUN_MINUTES is at most hours).
RUN_BUCKETS = (30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0)

disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in the library

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
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.received = Counter(
            "box_bot_deliveries_received", "Webhook deliveries stored", ["event"], registry=r
        )
        self.refused = Counter(
            "box_bot_webhooks_refused",
            "Webhook requests refused, by reason (bad_signature: a wrong WEBHOOK_SECRET?)",
            ["reason"],
            registry=r,
        )
        self.skipped = Counter(
            "box_bot_deliveries_skipped",
            "Signed deliveries answered without being stored: they cannot lead to work",
            ["event", "reason"],
            registry=r,
        )
        self._skipped: dict[tuple[str, str], Counter] = {}
        self.run_seconds = Histogram(
            "box_bot_run_duration_seconds",
            "From a run being asked for to the end of its work, by outcome",
            ["outcome"],
            buckets=RUN_BUCKETS,
            registry=r,
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
        self.box_dollars = Counter(
            "box_bot_box_dollars",
            "Dollars Box billed for runs' boxes, as read from its usage endpoint",
            ["installation", "repo"],
            registry=r,
        )
        self.box_seconds = Counter(
            "box_bot_box_billable_seconds",
            "Billed seconds of runs' boxes, as read from Box's usage endpoint",
            ["installation", "repo"],
            registry=r,
        )
        self.dollar_stops = Counter(
            "box_bot_runs_stopped_by_dollar_limit",
            "Runs whose box was stopped because it passed a dollar limit, by limit",
            ["limit"],
            registry=r,
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

    def box_spent(self, installation_id: int, repo: str, seconds: float, dollars: float) -> None:
        """Count what a box was billed since its last reading (negative amounts are ignored)."""
        labels = (str(installation_id), repo)
        if seconds > 0:
            self.box_seconds.labels(*labels).inc(seconds)
        if dollars > 0:
            self.box_dollars.labels(*labels).inc(dollars)

    def skipped_one(self, event: str, reason: str) -> None:
        """Count one delivery answered without being stored (the busiest path: children cached)."""
        child = self._skipped.get((event, reason))
        if child is None:
            child = self._skipped[event, reason] = self.skipped.labels(event, reason)
        child.inc()

    def run_ended(self, outcome: str, seconds: float) -> None:
        """Observe how long a run took until its work ended (finished, failed, interrupted…)."""
        self.run_seconds.labels(outcome).observe(max(0.0, seconds))

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
