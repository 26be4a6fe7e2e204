"""Stand-ins for the outside world, on real loopback sockets, and builders (no tests in this file).

* ``HttpStandIn`` -- an aiohttp server in its own thread playing WeCom, DingTalk or a
  webhook receiver: it records every request and answers from a script
  (``"ok"``, an HTTP status, ``"timeout"``, ``"redirect"``, ``("echo", status)`` -- an
  error page quoting the URL it was asked for, as gateways write them -- or a JSON body), then
  ``"ok"``; with ``signing_secret`` it checks ``X-Citywatch-Signature`` as an
  integrator's receiver does (``alerts.channels.webhook.verify``) and answers 401
  to a push that fails it.
* ``smtp_server()`` -- aiosmtpd's controller (a real SMTP server) collecting mails.
* ``message()``, ``send_once()``, ``send_all()`` -- a push and its sending, for a channel's test.
* case event / ledger entry builders shaped exactly like the worker's output.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from alerts.channels.plugin import Channel, Result
from alerts.channels.webhook import SIGNATURE_HEADER, SignatureError, verify
from alerts.message import Message

T0 = 1_763_800_000_000  # 2025-11-22T08:26:40Z, 16:26:40 in Zhengzhou
HOOK_SECRET = "hook-secret-for-the-tests-0123456789abcdef"
"""A webhook signing key as the city would choose it (at least 32 bytes)."""
LINK_SECRET = "link-secret-for-the-tests-0123456789abcdef"
"""An ack link key (at least 32 bytes)."""


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float
    answered: Any = None

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class HttpStandIn:
    """``ok_body``: what "ok" answers (WeCom/DingTalk: errcode 0; a webhook: anything 200)."""

    ok_body: dict[str, Any] = field(default_factory=lambda: {"errcode": 0, "errmsg": "ok"})
    script: list[Any] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    delivered: list[Seen] = field(default_factory=list)
    """Requests answered "ok" (what an officer would have seen)."""
    dedup_header: str | None = None
    """Drop a repeat with the same value of this header (a webhook honouring Idempotency-Key)."""
    down: bool = False
    """While True every request gets HTTP 500."""
    signing_secret: str | None = None
    """Check every request's signature with this key; a push that fails is answered 401."""
    refused: list[str] = field(default_factory=list)
    """Why pushes were refused by the signature check."""

    def __post_init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.ready.set()
        self.loop.run_forever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/send"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        s = Seen(
            request.path,
            dict(request.query),
            dict(request.headers),
            await request.read(),
            time.time(),
        )
        self.seen.append(s)
        if (
            request.path == "/moved"
        ):  # where "redirect" points: a 404 quoting the URL, as servers do
            return web.Response(status=404, text=f"no robot at {request.path_qs}")
        if self.signing_secret is not None:
            try:
                verify(self.signing_secret, request.headers.get(SIGNATURE_HEADER), s.body)
            except SignatureError as exc:
                self.refused.append(str(exc))
                s.answered = 401
                return web.Response(status=401, text=str(exc))
        action = self.script.pop(0) if self.script else ("down" if self.down else "ok")
        s.answered = action
        if action == "redirect":
            raise web.HTTPFound(f"/moved?{request.query_string}")
        if isinstance(action, tuple) and action[0] == "echo":
            return web.Response(status=action[1], text=f"refused: {request.path_qs}")
        if action == "timeout":
            await asyncio.sleep(1.5)
            return web.json_response(self.ok_body)  # too late: the client gave up
        if action == "down":
            return web.Response(status=500, text="down")
        if isinstance(action, int):
            return web.Response(status=action, text=f"status {action}")
        if isinstance(action, dict):
            return web.json_response(action)
        if self.dedup_header:
            key = request.headers.get(self.dedup_header)
            if any(d.headers.get(self.dedup_header) == key for d in self.delivered):
                return web.json_response({"duplicate": True})
        self.delivered.append(s)
        return web.json_response(self.ok_body)

    def close(self) -> None:
        async def stop() -> None:
            await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def message(key: str = "k1", text: str = "花园路井盖缺失") -> Message:
    """A push as the renderer makes it (title, markdown, text, the webhook's data)."""
    return Message(key=key, receiver="grid", title=f"【井盖缺失或破损·新案件】{text} / Manhole: new case",
                   markdown=f"### {text}\n---\n**Manhole cover missing**", text=f"{text}\n\nManhole cover missing\n",
                   data={"id": key, "cases": [{"case_id": "c1"}]})  # fmt: skip


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def send_once(channel: Channel, msg: Message) -> Result:
    """One send, then close the channel."""
    try:
        return await channel.send(msg)
    finally:
        await channel.close()


async def send_all(channel: Channel, messages: list[Message]) -> list[Result]:
    """Each message in turn through one channel (one session, one token bucket), then close it."""
    try:
        return [await channel.send(m) for m in messages]
    finally:
        await channel.close()


class Mailbox:
    def __init__(self) -> None:
        self.mails: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        self.mails.append(envelope)
        return "250 OK"


def smtp_server() -> tuple[Any, Mailbox]:
    import socket

    from aiosmtpd.controller import Controller

    with socket.socket() as sock:  # a free port (the controller needs a number)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    box = Mailbox()
    ctl = Controller(box, hostname="127.0.0.1", port=port)
    ctl.start()
    return ctl, box


def case_event(n: int = 1, *, rule: str = "manhole", state: str = "open", at: int = T0, opened_at: int | None = None,
               district: str = "jinshui", grid: str = "JS-G07", device: str | None = None, severity: str | None = None,
               deadline: int | None = None, detail: dict[str, Any] | None = None,
               case_id: str | None = None) -> dict[str, Any]:  # fmt: skip
    kind = rule.split(".")[0]
    device = (
        device
        or f"{ {'manhole': 'MH', 'streetlight': 'SL', 'dust': 'DS', 'offline': 'OF'}[kind] }-{n:04d}"
    )
    opened_at = at if opened_at is None else opened_at
    if deadline is None and kind == "manhole":
        deadline = opened_at + 2 * 3_600_000
    return {
        "case_id": case_id or f"{rule}:{device}:{opened_at}",
        "kind": kind if kind != "offline" else "manhole",
        "rule": rule, "device": device, "district": district, "grid": grid,
        "unit": "郑州市市政工程管理处", "severity": severity or {"manhole": "major", "streetlight": "minor", "dust": "major"}.get(kind, "minor"),
        "state": state, "at": at, "opened_at": opened_at, "deadline": deadline,
        "evidence": [{"type": "reading", "device": device, "ts": opened_at}], "component_code": "0102",
        "address": f"花园路农业路口南{n}号", "detail": {"acknowledged_at": None, **(detail or {})},
    }  # fmt: skip


def hour_entry(case: dict[str, Any], k: int, amount: int = 10_000) -> dict[str, Any]:
    return {
        "id": f"{case['case_id']}:hour:{k}", "case_id": case["case_id"], "rule": "manhole", "device": case["device"],
        "payer": case["unit"], "payer_type": "property_unit", "district": case["district"], "amount_yuan": amount,
        "accrued_at": case["deadline"] + k * 3_600_000, "hour_index": k, "reverses": None, "evidence": [],
    }  # fmt: skip


class FakeClock:
    def __init__(self, start: int = T0):
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


def wait_for(check: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = check()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"{what} not reached within {timeout}s")


async def async_wait_for(
    check: Any, timeout: float = 10.0, what: str = "condition", tick: Any = None
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tick is not None:
            tick()
        v = check()
        if v:
            return v
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what} not reached within {timeout}s")
