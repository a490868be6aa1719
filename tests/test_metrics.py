"""GET /metrics: counters that move when the app works."""

from __future__ import annotations

import json
import re

from bot.ingress.webhook import MAX_BODY_BYTES, sign
from bot.metrics import box_endpoint, github_endpoint
from bot.models import RunState
from bot.sim.box import BoxSimulator
from bot.sim.github import GitHubSimulator
from bot.store.records import DeliveryStatus
from tests.conftest import REPO, RunningApp, load_payload
from tests.flow import labeled, wait_for_run


def value(text: str, name: str, **labels: str) -> float:
    """Read one sample from Prometheus text (0 when absent), whatever the label order."""
    for line in text.splitlines():
        sample, _, number = line.rpartition(" ")
        metric, _, label_text = sample.partition("{")
        found = dict(re.findall(r'(\w+)="([^"]*)"', label_text))
        if metric == name and found == labels:
            return float(number)
    return 0.0


def test_endpoint_templates() -> None:
    assert (
        github_endpoint("https://api.github.com/repos/o/r/issues/12/comments?per_page=100")
        == "/repos/{repo}/issues/{n}/comments"
    )
    assert github_endpoint("/repos/o/r/commits/" + "a" * 40 + "/check-runs") == (
        "/repos/{repo}/commits/{sha}/check-runs"
    )
    assert github_endpoint("/repos/o/r/collaborators/someone/permission") == (
        "/repos/{repo}/collaborators/{user}/permission"
    )
    assert github_endpoint("/app/installations/42/access_tokens") == (
        "/app/installations/{n}/access_tokens"
    )
    assert box_endpoint("/boxes/bx_ab23cd45/prompts/prompt_9f") == "/boxes/{box}/prompts/{prompt}"


async def test_metrics_change_after_a_delivery(
    app: RunningApp, github_sim: GitHubSimulator
) -> None:
    github_sim.add_issue(REPO, 5, title="Fix the thing")
    before = await (await app.client.get("/metrics")).text()
    assert value(before, "box_bot_deliveries_received_total", event="issues") == 0

    await app.post("issues", labeled(5), delivery_id="m-1")
    await app.wait_for("m-1")
    await wait_for_run(app, 5, RunState.IDLE)
    response = await app.client.get("/metrics")
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert value(text, "box_bot_deliveries_received_total", event="issues") == 1
    assert value(text, "box_bot_deliveries_processed_total", event="issues", outcome="done") == 1
    assert value(text, "box_bot_inbox_deliveries", status="done") == 1
    assert value(text, "box_bot_runs", state="idle") == 1
    assert value(text, "box_bot_token_refreshes_total") == 1
    assert (
        value(
            text,
            "box_bot_upstream_calls_total",
            service="github",
            method="POST",
            endpoint="/repos/{repo}/issues/{n}/comments",
            status="201",
        )
        == 1
    )
    assert (
        value(
            text,
            "box_bot_upstream_calls_total",
            service="box",
            method="POST",
            endpoint="/boxes",
            status="202",
        )
        == 1
    )
    assert "box_bot_upstream_call_seconds_bucket" in text


async def test_a_run_state_that_empties_reads_zero(
    app: RunningApp, github_sim: GitHubSimulator
) -> None:
    github_sim.add_issue(REPO, 6, title="Fix the other thing")
    await app.post("issues", labeled(6), delivery_id="m-2")
    run = await wait_for_run(app, 6, RunState.IDLE)
    text = await (await app.client.get("/metrics")).text()
    assert value(text, "box_bot_runs", state="idle") == 1

    await app.components.runs.archive(run, "a test archives it")
    text = await (await app.client.get("/metrics")).text()
    assert value(text, "box_bot_runs", state="idle") == 0
    assert value(text, "box_bot_runs", state="archived") == 1
    assert value(text, "box_bot_runs", state="working") == 0
    assert 'box_bot_runs{state="working"} 0.0' in text


async def test_a_failed_delivery_is_counted_as_failed(app: RunningApp) -> None:
    # A payload no handler can read: the delivery fails every attempt.
    broken = labeled(8)
    del broken["issue"]
    await app.post("issues", broken, delivery_id="m-fail")
    row = await app.wait_for("m-fail")
    assert row.status is DeliveryStatus.FAILED
    text = await (await app.client.get("/metrics")).text()
    processed = "box_bot_deliveries_processed_total"
    assert value(text, processed, event="issues", outcome="failed") == 1
    assert value(text, processed, event="issues", outcome="retry") == row.attempts - 1
    assert value(text, "box_bot_inbox_deliveries", status="failed") == 1


async def test_refused_webhooks_are_counted_by_reason(app: RunningApp) -> None:
    body = json.dumps(load_payload("issues.labeled.1")).encode()
    wrong = {"X-Hub-Signature-256": sign("a-wrong-secret-0123456789", body)}
    for _ in range(2):  # a wrong WEBHOOK_SECRET: every delivery is refused
        assert (await app.post("issues", body, headers=wrong)).status == 401
    assert (await app.post("issues", body + b" " * MAX_BODY_BYTES)).status == 413
    assert (await app.post("issues", body, delivery_id="two words")).status == 400
    assert (await app.post("issues", b"{not json")).status == 400
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert (await app.post("issues", body, headers=form)).status == 400
    store = app.components.store
    await store._backend.run(lambda conn: conn.execute("PRAGMA query_only = ON"))
    assert (await app.post("issues", body)).status == 503
    await store._backend.run(lambda conn: conn.execute("PRAGMA query_only = OFF"))

    text = await (await app.client.get("/metrics")).text()
    refused = "box_bot_webhooks_refused_total"
    assert value(text, refused, reason="bad_signature") == 2
    assert value(text, refused, reason="too_large") == 1
    assert value(text, refused, reason="bad_headers") == 1
    assert value(text, refused, reason="malformed") == 1
    assert value(text, refused, reason="bad_content_type") == 1
    assert value(text, refused, reason="store_unavailable") == 1
    assert value(text, "box_bot_deliveries_received_total", event="issues") == 0


async def test_process_metrics_and_no_created_series(app: RunningApp) -> None:
    await app.post("issues", labeled(9), delivery_id="m-9")
    await app.wait_for("m-9")
    text = await (await app.client.get("/metrics")).text()
    assert value(text, "process_resident_memory_bytes") > 0
    assert value(text, "process_cpu_seconds_total") > 0
    assert 'python_info{implementation="CPython"' in text
    assert value(text, "box_bot_deliveries_received_total", event="issues") == 1
    assert "_created" not in text


async def test_run_duration_is_observed_by_outcome(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    github_sim.add_issue(REPO, 11, title="Fix the thing")
    await app.post("issues", labeled(11))
    await wait_for_run(app, 11, RunState.IDLE)
    box_sim.credit = False  # the next box cannot be created: that run fails
    github_sim.add_issue(REPO, 12, title="Fix another thing")
    await app.post("issues", labeled(12))
    await wait_for_run(app, 12, RunState.FAILED)

    text = await (await app.client.get("/metrics")).text()
    histogram = "box_bot_run_duration_seconds"
    assert value(text, f"{histogram}_count", outcome="finished") == 1
    assert value(text, f"{histogram}_count", outcome="failed") == 1
    assert value(text, f"{histogram}_bucket", outcome="finished", le="30.0") == 1
    assert 0 < value(text, f"{histogram}_sum", outcome="finished") < 30
