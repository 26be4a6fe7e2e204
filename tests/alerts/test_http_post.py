"""alerts/channels/http_post.py: the one judge of HTTP and robot answers (docs/alerts.md#channels)."""

from __future__ import annotations

import pytest

from alerts.channels.http_post import http_failure, redirected, robot_answer
from alerts.channels.plugin import Result
from alerts.channels.ratelimit import TokenBucket

HTTP = [
    # (status, Retry-After, verdict, retry after)
    (500, None, "retry", None),
    (503, "7", "retry", 7.0),
    (429, "30", "retry", 30.0),
    (429, "Wed, 21 Oct 2015 07:28:00 GMT", "retry", None),  # a date: backoff instead
    (408, None, "retry", None),
    (400, None, "give_up", None),
    (401, None, "give_up", None),
    (404, "5", "give_up", None),
]


@pytest.mark.parametrize(("status", "retry_after", "verdict", "after"), HTTP)
def test_http_answers(
    status: int, retry_after: str | None, verdict: str, after: float | None
) -> None:
    res = http_failure(status, "body " * 100, retry_after)
    assert (res.status, res.retry_after_s) == (verdict, after)
    assert res.detail.startswith(f"HTTP {status}: body") and len(res.detail) < 220


ROBOT = [
    # (answer, verdict, retry after)
    ('{"errcode": 0, "errmsg": "ok"}', "delivered", None),
    ('{"errcode": 45009, "errmsg": "api freq out of limit"}', "retry", 60),
    ('{"errcode": -1, "errmsg": "system busy"}', "retry", None),
    ('{"errcode": 93000, "errmsg": "invalid webhook url"}', "give_up", None),
    ("<html>gateway</html>", "retry", None),
]


@pytest.mark.parametrize(("text", "verdict", "after"), ROBOT)
def test_robot_answers(text: str, verdict: str, after: float | None) -> None:
    bucket = TokenBucket(20)
    res = robot_answer(200, text, bucket, frozenset({45009}), 60, frozenset({-1}))
    assert (res.status, res.retry_after_s) == (verdict, after)
    assert (bucket.wait_s() > 50) == (
        verdict == "retry" and after == 60
    )  # throttled: the robot is held


def test_a_redirect_names_only_the_host_it_points_to() -> None:
    res = redirected(301, "https://bot:pw@elsewhere.example:8443/send?key=K3y-of-the-robot")
    assert res.status == "give_up"
    assert res.detail.startswith("HTTP 301: redirected to https://elsewhere.example:8443/...;")
    assert "K3y" not in res.detail and "pw" not in res.detail
    assert "redirected to another path" in redirected(307, "/v2/send?key=K").detail
    assert "redirected to nowhere" in redirected(302, None).detail


def test_a_far_end_quoting_the_url_puts_no_key_into_the_detail() -> None:
    """A delivery detail goes to the log, the outbox and the alerts records: it is redacted."""
    page = "bad gateway for /cgi-bin/webhook/send?key=693a91f6-robot&debug=1"
    assert (
        http_failure(502, page).detail
        == "HTTP 502: bad gateway for /cgi-bin/webhook/send?key=***&debug=1"
    )
    assert Result.retry(f"InvalidURL: {page}").detail.endswith("?key=***&debug=1")
