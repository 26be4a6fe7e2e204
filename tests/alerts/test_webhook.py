"""alerts/channels/webhook.py against a loopback receiver: the timestamped signature and its check, Idempotency-Key, verdicts (docs/alerts.md#webhook)."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from alerts.channels import make_channel
from alerts.channels.plugin import OptionError
from alerts.channels.webhook import SignatureError, WebhookChannel, sign, verify
from alerts.route import parse_routes
from tests.alerts.standins import HOOK_SECRET, HttpStandIn, message, run, send_all, send_once

NOW = 1_763_800_000


def test_webhook_signs_timestamp_and_body_and_sends_the_idempotency_key(
    server: HttpStandIn,
) -> None:
    server.script = ["ok", 429, 400]
    ch = WebhookChannel(
        server.url, secret=HOOK_SECRET, headers={"X-City": "zhengzhou"}, timeout_s=2
    )
    before = int(time.time())
    ok, too_many, bad = run(send_all(ch, [message("key-1"), message("key-2"), message("key-3")]))
    seen = server.seen[0]
    assert ok.status == "delivered"
    assert seen.headers["Idempotency-Key"] == "key-1"
    assert seen.headers["X-City"] == "zhengzhou"
    # What a receiver computes, written out independently of the channel's code:
    header = seen.headers["X-Citywatch-Signature"]
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", header), header
    t = int(header.split(",")[0][2:])
    assert before <= t <= time.time()
    mac = hmac.new(HOOK_SECRET.encode(), f"{t}.".encode() + seen.body, hashlib.sha256).hexdigest()
    assert header == f"t={t},v1={mac}" == sign(HOOK_SECRET, seen.body, t)
    assert verify(HOOK_SECRET, header, seen.body) == t
    assert seen.json() == {"id": "key-1", "cases": [{"case_id": "c1"}]}
    assert too_many.status == "retry" and bad.status == "give_up"


def test_each_attempt_is_signed_at_its_own_time(server: HttpStandIn) -> None:
    clock = iter([1_763_800_000.0, 1_763_800_900.0])
    ch = WebhookChannel(server.url, secret=HOOK_SECRET, clock=lambda: next(clock))
    run(send_all(ch, [message("k"), message("k")]))
    stamps = [s.headers["X-Citywatch-Signature"].split(",")[0] for s in server.seen]
    assert stamps == ["t=1763800000", "t=1763800900"]  # a retry 15 min later is not stale


def test_a_signature_within_the_window_is_accepted_both_ways() -> None:
    body = b'{"id":"k"}'
    for skew in (-299, 0, 299):  # a receiver's clock behind or ahead of citywatch's
        assert verify(HOOK_SECRET, sign(HOOK_SECRET, body, NOW + skew), body, now=NOW) == NOW + skew


def test_webhook_signature_older_than_window_is_refused() -> None:
    body = b'{"id":"k"}'
    with pytest.raises(SignatureError, match="301 s old, outside the 300 s window"):
        verify(HOOK_SECRET, sign(HOOK_SECRET, body, NOW - 301), body, now=NOW)
    with pytest.raises(SignatureError, match="3601 s old, outside the 3600 s window"):
        verify(HOOK_SECRET, sign(HOOK_SECRET, body, NOW - 3601), body, now=NOW, tolerance_s=3600)


def test_webhook_signature_from_the_future_is_refused() -> None:
    body = b'{"id":"k"}'
    with pytest.raises(SignatureError, match="301 s in the future"):
        verify(HOOK_SECRET, sign(HOOK_SECRET, body, NOW + 301), body, now=NOW)


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (None, "no X-Citywatch-Signature header"),
        ("", "no X-Citywatch-Signature header"),
        ("sha256=" + "0" * 64, "malformed"),  # the old, timestamp-less form
        (f"v1={'0' * 64}", "malformed"),
        (f"t=,v1={'0' * 64}", "malformed"),
        (f"t=１７６３８０００００,v1={'0' * 64}", "malformed"),  # full-width digits are not a time
        (f"t={NOW}", "malformed"),
        (f"t={NOW},v1={'0' * 64}", "does not match"),
        (f"t={NOW},v1=签名", "does not match"),
    ],
)
def test_a_malformed_or_forged_signature_is_refused(header: str | None, why: str) -> None:
    with pytest.raises(SignatureError, match=why):
        verify(HOOK_SECRET, header, b'{"id":"k"}', now=NOW)


def test_a_changed_body_timestamp_or_key_is_refused() -> None:
    body = b'{"id":"k","cases":[]}'
    header = sign(HOOK_SECRET, body, NOW)
    with pytest.raises(SignatureError, match="does not match"):
        verify(HOOK_SECRET, header, body.replace(b"[]", b"[1]"), now=NOW)
    with pytest.raises(SignatureError, match="does not match"):  # a replay made to look fresh
        verify(HOOK_SECRET, header.replace(f"t={NOW}", f"t={NOW + 60}"), body, now=NOW + 60)
    with pytest.raises(SignatureError, match="does not match"):
        verify("another-key-of-the-right-length-0123456789", header, body, now=NOW)


def test_a_receiver_replacing_its_key_accepts_either() -> None:
    body = b"{}"
    old, new_key = HOOK_SECRET, "the-new-hook-secret-0123456789abcdefghij"
    assert verify([new_key, old], sign(old, body, NOW), body, now=NOW) == NOW
    assert verify([new_key, old], f"t={NOW},v1={'0' * 64},v1=" + sign(new_key, body, NOW).split("v1=")[1],
                  body, now=NOW) == NOW  # fmt: skip


def test_the_loopback_receiver_refuses_a_push_signed_with_another_key(server: HttpStandIn) -> None:
    server.signing_secret = HOOK_SECRET
    ch = WebhookChannel(server.url, secret="not-the-receivers-key-0123456789abcdef")
    res = run(send_once(ch, message()))
    assert res.status == "give_up" and "HTTP 401" in res.detail
    assert server.refused == ["signature does not match: another key, or the body was changed"]
    unsigned = run(send_once(WebhookChannel(server.url), message()))
    assert unsigned.status == "give_up" and "not signed" in server.refused[-1]


def test_a_webhook_secret_shorter_than_32_bytes_is_refused() -> None:
    with pytest.raises(OptionError, match=r"secret: 31 bytes; an HMAC key needs at least 32: make one with "
                                          r"python -c 'import secrets; print\(secrets.token_urlsafe\(32\)\)'"):  # fmt: skip
        WebhookChannel("http://127.0.0.1:1/hook", secret="x" * 31)
    assert WebhookChannel("http://127.0.0.1:1/hook", secret="x" * 32).secret == "x" * 32


def test_webhook_without_a_secret_sends_no_signature(server: HttpStandIn) -> None:
    assert run(send_once(WebhookChannel(server.url), message())).status == "delivered"
    assert "X-Citywatch-Signature" not in server.seen[0].headers


def test_webhook_timeout_and_refused_connection_are_retried(server: HttpStandIn) -> None:
    server.script = ["timeout"]
    res = run(send_once(WebhookChannel(server.url, timeout_s=0.3), message()))
    assert res.status == "retry" and "timed out" in res.detail
    res = run(
        send_once(WebhookChannel("http://127.0.0.1:9/nothing-listens", timeout_s=1), message())
    )
    assert res.status == "retry"


def test_webhook_entry_of_the_routing_file(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("CW_TEST_HOOK_SECRET", HOOK_SECRET)
    cfg = parse_routes('receivers:\n  - name: w\n    webhook: {url: "http://127.0.0.1:1/hook", secret: "${CW_TEST_HOOK_SECRET}",'
                       " headers: {X-City: zhengzhou, X-Num: 7}}\nroute: {receiver: w}\n")  # fmt: skip
    (spec,) = cfg.receivers["w"].channels
    assert spec.options == {"url": "http://127.0.0.1:1/hook", "secret": HOOK_SECRET,
                            "headers": {"X-City": "zhengzhou", "X-Num": "7"}, "timeout": None}  # fmt: skip
    assert spec.target == "webhook:http://127.0.0.1:1/hook"
    assert HOOK_SECRET not in repr(spec)
    ch = make_channel(spec)
    assert isinstance(ch, WebhookChannel) and ch.headers == {"X-City": "zhengzhou", "X-Num": "7"}


def test_the_integrators_snippet_in_the_docs_runs_and_agrees_with_the_channel() -> None:
    """docs/alerts.md#verifying-a-webhook-signature: its worked example holds, and its ``verify``
    accepts what the channel signs and refuses what ``alerts.channels.webhook.verify`` refuses."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "alerts.md").read_text(encoding="utf-8")
    section = docs.split("## Verifying a webhook signature\n", 1)[1].split("\n## ", 1)[0]
    (snippet,) = re.findall(r"```python\n(.*?)```", section, re.S)
    ns: dict = {}
    exec(compile(snippet, "docs/alerts.md", "exec"), ns)  # its own asserts: the worked example
    header = re.search(r"^X-Citywatch-Signature: (.+)$", section, re.M).group(1)
    assert header == ns["header"] == sign(ns["secret"].decode(), ns["body"], 1763800000)
    body = b'{"id":"k"}'
    for t, ok in ((NOW, True), (NOW - 301, False), (NOW + 301, False)):
        h = sign(HOOK_SECRET, body, t)
        theirs = _accepts(lambda h=h: ns["verify"](HOOK_SECRET.encode(), h, body, now=NOW))
        ours = _accepts(lambda h=h: verify(HOOK_SECRET, h, body, now=NOW))
        assert theirs == ours == ok, t
    forged = f"t={NOW},v1={'0' * 64}"
    assert not _accepts(lambda: ns["verify"](HOOK_SECRET.encode(), forged, body, now=NOW))


def _accepts(check: Callable[[], object]) -> bool:
    try:
        check()
    except ValueError:  # SignatureError is one
        return False
    return True
