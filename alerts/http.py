"""The acknowledgement endpoint: officers act on a case from the link in a push.

``/ack?case=..&device=..&action=ack|close|accident&officer=..&exp=<epoch s>&sig=<hex>``

* ``sig`` = hex HMAC-SHA256(key = ``ack.secret``, msg = the canonical query):
  every parameter but ``sig``, sorted by name, ``name=value`` with the value
  percent-encoded (RFC 3986, nothing left unencoded), joined by ``&``.
* ``GET`` of a valid link shows a one-button confirmation page; the button
  ``POST``s the same signed query, which records the action. (Chat apps and
  mail scanners fetch links to preview them; a GET must not close a case.)
* A forged or altered link is refused with 403, an expired one with 410, a
  malformed one with 400 -- each with a short page in Chinese and English.
* Integrations use ``POST /ack`` with ``Authorization: Bearer <token>`` (one
  of ``ack.tokens``) and a JSON body ``{"case": .., "device": .., "action":
  .., "officer": .., "note": ..}``; the answer is JSON.

A valid request becomes an ``OfficerAction`` through ``alerts.acks.submit``
(``<prefix>.acks``), which the stream worker applies to the case; the case
event that follows (``acknowledged``/``closed``) stops the escalation.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import quote, urlencode

from aiohttp import web

from alerts.route import AckConfig
from contract.cases import OfficerAction

log = logging.getLogger("citywatch.alerts.http")

LINK_ACTIONS = ("ack", "close", "accident")
ACTION_NAMES = {"ack": ("确认收到", "acknowledge"), "close": ("已修复结案", "close as repaired"),
                "accident": ("上报事故", "report an accident")}  # fmt: skip
SIGNED = ("action", "case", "device", "exp", "officer")


def canonical(params: Mapping[str, str]) -> str:
    return "&".join(f"{k}={quote(str(params[k]), safe='')}" for k in sorted(params) if k != "sig")


def signature(secret: str, params: Mapping[str, str]) -> str:
    return hmac.new(secret.encode(), canonical(params).encode(), hashlib.sha256).hexdigest()


def make_link(
    cfg: AckConfig, case_id: str, device: str, action: str, officer: str, now_ms: int
) -> str:
    params = {"case": case_id, "device": device, "action": action, "officer": officer,
              "exp": str((now_ms + cfg.link_ttl_ms) // 1000)}  # fmt: skip
    params["sig"] = signature(cfg.secret, params)
    return f"{cfg.base_url}/ack?{urlencode(params)}"


class Refused(Exception):
    def __init__(self, status: int, zh: str, en: str):
        super().__init__(en)
        self.status, self.zh, self.en = status, zh, en


def verify(cfg: AckConfig, query: Mapping[str, str], now_ms: int) -> dict[str, str]:
    """The link's parameters if it is genuine and not expired; else ``Refused``."""
    missing = [k for k in (*SIGNED, "sig") if not query.get(k)]
    if missing:
        raise Refused(400, "链接不完整", f"The link is incomplete (missing {', '.join(missing)}).")
    params = {k: query[k] for k in SIGNED}
    extra = set(query) - set(SIGNED) - {"sig"}
    if extra:
        raise Refused(403, "链接无效：签名不符", "This link is not valid: it has been altered.")
    if not hmac.compare_digest(signature(cfg.secret, params), query["sig"]):
        raise Refused(
            403, "链接无效：签名不符", "This link is not valid: its signature does not match."
        )
    if not params["exp"].isdigit():
        raise Refused(400, "链接格式错误", "The link is malformed (exp).")
    if int(params["exp"]) * 1000 < now_ms:
        raise Refused(
            410,
            "链接已过期，请在最新的告警消息中操作",
            "This link has expired; use the link in the latest alert.",
        )
    if params["action"] not in LINK_ACTIONS:
        raise Refused(400, "不支持的操作", f"Unknown action {params['action']!r}.")
    return params


def page(status: int, zh: str, en: str, body_extra: str = "") -> web.Response:
    text = (
        "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'><title>citywatch</title></head>"
        f"<body style='font-family:sans-serif;max-width:32em;margin:2em auto;padding:0 1em'>"
        f"<h2>{html.escape(zh)}</h2><p>{html.escape(en)}</p>{body_extra}</body></html>"
    )
    return web.Response(status=status, text=text, content_type="text/html", charset="utf-8")


class AckEndpoint:
    """The aiohttp application. ``submit`` publishes the action (``alerts.acks.submit`` bound to settings)."""

    def __init__(self, cfg: AckConfig, submit: Callable[[OfficerAction], Awaitable[None]],
                 clock: Callable[[], int]):  # fmt: skip
        self.cfg, self.submit, self.clock = cfg, submit, clock
        self.app = web.Application()
        self.app.add_routes(
            [
                web.get("/ack", self.get),
                web.post("/ack", self.post),
                web.get("/healthz", self.health),
            ]
        )
        self.runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int) -> int:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port)
        await site.start()
        server = site._server  # noqa: SLF001 - the only way to learn an ephemeral port
        self.port = server.sockets[0].getsockname()[1] if server and server.sockets else port  # type: ignore[union-attr]
        return self.port

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def get(self, request: web.Request) -> web.Response:
        try:
            params = verify(self.cfg, request.query, self.clock())
        except Refused as r:
            return page(r.status, r.zh, r.en)
        zh, en = ACTION_NAMES[params["action"]]
        form = (
            f"<p>案件 / case: <code>{html.escape(params['case'])}</code><br>设备 / device: "
            f"<code>{html.escape(params['device'])}</code></p>"
            f"<form method='post' action='/ack?{html.escape(request.query_string)}'>"
            f"<button style='font-size:1.4em;padding:.5em 1.5em'>{html.escape(zh)} / {html.escape(en)}</button></form>"
        )
        return page(200, f"请确认：{zh}", f"Please confirm: {en}", form)

    async def post(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if auth:
            return await self._bearer(request, auth)
        try:
            params = verify(self.cfg, request.query, self.clock())
        except Refused as r:
            return page(r.status, r.zh, r.en)
        action = OfficerAction(action=params["action"], device=params["device"], at=self.clock(),
                               officer=params["officer"], case_id=params["case"])  # fmt: skip
        try:
            await self.submit(action)
        except Exception as exc:  # noqa: BLE001 - Kafka down: tell the officer to try again
            log.error("could not submit %s: %s", action, exc)
            return page(
                503, "暂时无法记录，请稍后重试", "Could not record it just now; please try again."
            )
        zh, en = ACTION_NAMES[params["action"]]
        log.info("officer %s: %s on case %s (link)", action.officer, action.action, action.case_id)
        return page(200, f"已记录：{zh}", f"Recorded: {en}. Thank you.")

    async def _bearer(self, request: web.Request, auth: str) -> web.Response:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not any(
            hmac.compare_digest(token.strip(), t) for t in self.cfg.tokens
        ):
            return web.json_response({"error": "invalid bearer token"}, status=401)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "body must be JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        missing = [k for k in ("device", "action", "officer") if not body.get(k)]
        if missing:
            return web.json_response({"error": f"missing {', '.join(missing)}"}, status=400)
        try:
            action = OfficerAction(action=str(body["action"]), device=str(body["device"]), at=self.clock(),
                                   officer=str(body["officer"]), case_id=body.get("case") or None,
                                   note=body.get("note"))  # fmt: skip
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        try:
            await self.submit(action)
        except Exception as exc:  # noqa: BLE001
            return web.json_response({"error": f"could not submit: {exc}"}, status=503)
        return web.json_response({"ok": True, "action": action.to_dict()})
