"""Webhook intake: signatures, bad input, the durable inbox and redelivery."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from bot.ingress.webhook import MAX_BODY_BYTES, sign, verify_signature
from tests.conftest import SECRET, RunningApp, load_payload
from tests.databases import on_every_backend

GITHUB_VECTOR = (
    "It's a Secret to Everybody",
    b"Hello, World!",
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
)
PATH = "/api/github/webhooks"


def test_githubs_published_signature_vector() -> None:
    secret, body, header = GITHUB_VECTOR
    assert sign(secret, body) == header
    assert verify_signature(secret, body, header)


@pytest.mark.parametrize(
    ("body", "header"),
    [
        (b"Hello, World!", GITHUB_VECTOR[2][:-1] + "f"),  # one hex digit changed
        (b"Hello, World!!", GITHUB_VECTOR[2]),  # one extra byte
        (b"Hello, World!", sign("another secret", b"Hello, World!")),
    ],
)
def test_wrong_signatures_do_not_verify(body: bytes, header: str) -> None:
    assert not verify_signature(GITHUB_VECTOR[0], body, header)


async def _count(app: RunningApp) -> int:
    return sum((await app.components.store.delivery_counts()).values())


def _headers(body: bytes, **extra: str) -> dict[str, str]:
    return {
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "Content-Type": "application/json",
        **extra,
    }


BAD_SIGNATURES = [
    None,
    "",
    "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59",
    "sha512=" + "a" * 128,
    "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
    "SHA256=757107EA0EB2509FC211221CCE984B8A37570B6D7586C22C46F4379C8B043E17",
    "sha256=" + "a" * 63,
    "sha256=" + "a" * 65,
    "sha256=" + "z" * 64,
    "sha256=é" + "a" * 63,
    "sha256= " + "a" * 63,
]


@pytest.mark.parametrize("header", BAD_SIGNATURES)
async def test_bad_signature_is_401_and_stores_nothing(app: RunningApp, header: str | None) -> None:
    body = json.dumps(load_payload("issues.labeled.1")).encode()
    headers = _headers(body)
    if header is not None:
        headers["X-Hub-Signature-256"] = header
    response = await app.client.post(PATH, data=body, headers=headers)
    assert response.status == 401
    assert (await response.json())["ok"] is False
    assert await _count(app) == 0


async def test_right_sha1_with_wrong_sha256_is_refused(app: RunningApp) -> None:
    body = json.dumps(load_payload("issues.labeled.1")).encode()
    headers = _headers(body, **{"X-Hub-Signature-256": sign("wrong-secret-xxxxxxx", body)})
    headers["X-Hub-Signature"] = "sha1=" + "0" * 40
    response = await app.client.post(PATH, data=body, headers=headers)
    assert response.status == 401
    assert await _count(app) == 0


async def test_reserialised_body_with_original_signature_is_refused(app: RunningApp) -> None:
    original = json.dumps(load_payload("issues.labeled.1"), indent=2).encode()
    reordered = json.dumps(json.loads(original), sort_keys=True).encode()
    headers = _headers(reordered, **{"X-Hub-Signature-256": sign(SECRET, original)})
    response = await app.client.post(PATH, data=reordered, headers=headers)
    assert response.status == 401


@pytest.mark.parametrize(
    ("missing", "message"),
    [("X-GitHub-Event", "X-GitHub-Event"), ("X-GitHub-Delivery", "X-GitHub-Delivery")],
)
async def test_missing_github_header_is_400(app: RunningApp, missing: str, message: str) -> None:
    body = json.dumps(load_payload("issues.labeled.1")).encode()
    headers = _headers(body, **{"X-Hub-Signature-256": sign(SECRET, body)})
    del headers[missing]
    response = await app.client.post(PATH, data=body, headers=headers)
    assert response.status == 400
    assert message in (await response.json())["error"]
    assert await _count(app) == 0


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"payload=%7B%7D", "application/x-www-form-urlencoded", "content type"),
        (b"{not json", "application/json", "not valid JSON"),
        (b"[1, 2]", "application/json", "not a JSON object"),
        (b"", "application/json", "not valid JSON"),
        (b"\xff\xfe", "application/json", "not valid JSON"),
    ],
)
async def test_malformed_signed_body_is_400(
    app: RunningApp, body: bytes, content_type: str, message: str
) -> None:
    headers = _headers(body, **{"X-Hub-Signature-256": sign(SECRET, body)})
    headers["Content-Type"] = content_type
    response = await app.client.post(PATH, data=body, headers=headers)
    assert response.status == 400
    assert message in (await response.json())["error"]
    assert await _count(app) == 0


async def test_ping_is_200_and_not_stored(app: RunningApp) -> None:
    response = await app.post("ping", load_payload("ping.event.1", installation_id=None))
    assert response.status == 200
    assert await _count(app) == 0


async def test_delivery_is_stored_and_answered_202(app: RunningApp) -> None:
    response = await app.post("issues", load_payload("issues.labeled.1"), delivery_id="d-1")
    assert response.status == 202
    assert await response.json() == {
        "ok": True,
        "delivery": "d-1",
        "stored": True,
        "duplicate": False,
    }
    row = await app.components.store.get_delivery("d-1")
    assert row is not None
    assert (row.event, row.action, row.installation_id) == ("issues", "labeled", 4242)


async def test_body_over_25_mib_is_413_and_just_under_is_accepted(app: RunningApp) -> None:
    payload = load_payload("issues.labeled.1")
    base = len(json.dumps({**payload, "padding": ""}).encode())
    payload["padding"] = "x" * (MAX_BODY_BYTES - base - 1)
    under = json.dumps(payload).encode()
    assert len(under) == MAX_BODY_BYTES - 1
    response = await app.post("issues", under, delivery_id="big-ok")
    assert response.status == 202
    over = under + b" " * 2
    response = await app.post("issues", over, delivery_id="too-big")
    assert response.status == 413
    assert await app.components.store.get_delivery("too-big") is None


async def test_body_of_exactly_25_mib_is_accepted(app: RunningApp) -> None:
    payload = load_payload("issues.labeled.1")
    base = len(json.dumps({**payload, "padding": ""}).encode())
    payload["padding"] = "x" * (MAX_BODY_BYTES - base)
    body = json.dumps(payload).encode()
    assert len(body) == MAX_BODY_BYTES
    response = await app.post("issues", body, delivery_id="exactly-25-mib")
    assert response.status == 202


@pytest.mark.parametrize(
    ("event", "delivery_id", "change", "message"),
    [
        ("issues", "x" * 129, {}, "X-GitHub-Delivery"),
        ("issues", "two words", {}, "X-GitHub-Delivery"),
        ("Issues; DROP", "d-ok", {}, "X-GitHub-Event"),
        ("issues", "d-ok", {"action": "opened\u0000"}, "action"),
        ("issues", "d-ok", {"action": 7}, "action"),
        ("issues", "d-ok", {"installation": {"id": 2**64}}, "installation id"),
        ("issues", "d-ok", {"installation": {"id": "4242"}}, "installation id"),
        ("issues", "d-ok", {"installation": {"id": True}}, "installation id"),
    ],
)
async def test_signed_delivery_with_impossible_names_or_ids_is_400(
    app: RunningApp, event: str, delivery_id: str, change: dict[str, object], message: str
) -> None:
    payload = {**load_payload("issues.labeled.1"), **change}
    body = json.dumps(payload).encode()
    response = await app.post(event, body, delivery_id=delivery_id)
    assert response.status == 400
    assert message in (await response.json())["error"]
    assert await _count(app) == 0


async def test_delivery_id_that_is_not_text_is_400_not_500(app: RunningApp) -> None:
    body = json.dumps(load_payload("issues.labeled.1")).encode()
    url = app.client.make_url(PATH)
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
        f"Content-Type: application/json\r\nX-GitHub-Event: issues\r\n"
        f"X-Hub-Signature-256: {sign(SECRET, body)}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(head + b"X-GitHub-Delivery: \xff\xfe\r\n\r\n" + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400"), answer[:80]
    assert b"X-GitHub-Delivery" in answer
    assert await _count(app) == 0


async def test_wrong_method_and_path(app: RunningApp) -> None:
    assert (await app.client.get(PATH)).status == 405
    body = json.dumps(load_payload("issues.labeled.1")).encode()
    headers = _headers(body, **{"X-Hub-Signature-256": sign(SECRET, body)})
    assert (await app.client.post("/webhooks", data=body, headers=headers)).status == 404
    assert await _count(app) == 0


@on_every_backend
async def test_redelivery_is_202_and_processed_once(app: RunningApp) -> None:
    payload = load_payload("installation.created.1")
    first = await app.post("installation", payload, delivery_id="same")
    await app.wait_for("same")
    again = await app.post("installation", payload, delivery_id="same")
    assert again.status == 202
    assert (await again.json())["duplicate"] is True
    row = await app.wait_for("same")
    assert first.status == 202
    assert row.attempts == 1


@on_every_backend
async def test_five_concurrent_copies_store_one_delivery(app: RunningApp) -> None:
    payload = load_payload("installation.created.1")
    responses = await asyncio.gather(
        *(app.post("installation", payload, delivery_id="five") for _ in range(5))
    )
    assert [r.status for r in responses] == [202] * 5
    duplicates = sorted([(await r.json())["duplicate"] for r in responses])
    assert duplicates == [False, True, True, True, True]
    row = await app.wait_for("five")
    assert row.attempts == 1
    assert await _count(app) == 1


async def test_store_that_cannot_be_written_answers_503(app: RunningApp) -> None:
    store = app.components.store
    await store._backend.run(lambda conn: conn.execute("PRAGMA query_only = ON"))
    response = await app.post("issues", load_payload("issues.labeled.1"), delivery_id="lost")
    assert response.status == 503
    assert "cannot store" in (await response.json())["error"]
    await store._backend.run(lambda conn: conn.execute("PRAGMA query_only = OFF"))
    assert await store.get_delivery("lost") is None


async def test_healthz(app: RunningApp) -> None:
    response = await app.client.get("/healthz")
    assert response.status == 200
    await app.components.store.close()
    response = await app.client.get("/healthz")
    assert response.status == 503
