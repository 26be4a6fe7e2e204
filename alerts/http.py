"""The acknowledgement endpoint: officers act on a case from the link in a push.

``/ack?case=..&device=..&action=ack|close|accident&officer=..&n=<nonce>&exp=<epoch s>&sig=<hex>``

Every act goes through ``alerts.gate`` (docs/officers.md): a link acts for the
directory officer it was made for, once (``n`` is its single use, kept in the
outbox database; a second use answers "already recorded" and changes nothing);
the API acts for the officer whose personal token is the bearer. Each attempt,
accepted or refused, is on the audit trail with the client's address and user
agent. Malformed input answers 400; a client that keeps failing is answered
429 for a while (``AttemptLimit``).

* ``sig`` = hex HMAC-SHA256(key = ``ack.secret``, msg = the canonical query):
  every parameter but ``sig``, sorted by name, ``name=value`` with the value
  percent-encoded (RFC 3986, nothing left unencoded), joined by ``&``.
* ``GET`` of a valid link shows a one-button confirmation page; the button
  ``POST``s the same signed query, which records the action. (Chat apps and
  mail scanners fetch links to preview them; a GET must not close a case.)
* A forged or altered link is refused with 403, an expired one with 410, a
  malformed one with 400 -- each with a short page in Chinese and English.
* Integrations use ``POST /ack`` with ``Authorization: Bearer <officer token>``
  (``citywatch officers token issue``) and a JSON body ``{"case": .., "device":
  .., "action": .., "note": .., "at": .., "reason": ..}``; the answer is JSON.
  An ``officer`` in the body is refused: the token says who acts.
* The city's platform drives the workflow's stages with ``POST /cases/stage``, the
  same bearer token and ``{"action": "dispatch"|"feedback"|"check", "device": ..,
  "case": .., "note": .., "photos": [..], "passed": true|false, "at": .., "reason": ..}``
  (docs/handover.md): a malformed body is 400 with the key and the fix, a bad token
  401, an act the policy refuses 403, an act out of turn (the case's stage does not take it:
  ``streams.workflow.stage_refusal``) 409 with the reason and the acts allowed now.

An accepted act becomes an ``OfficerAction`` on ``<prefix>.acks``, which the
stream worker applies to the case; the case event that follows
(``acknowledged``/``closed``) stops the escalation.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from urllib.parse import quote, urlencode

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from alerts.gate import ActRequest, Gate, Outcome
from alerts.route import AckConfig
from contract.cases import PHOTOS_MAX
from foundation.logs import redact

log = logging.getLogger("citywatch.alerts.http")

LINK_ACTIONS = ("ack", "close", "accident", "confirm_repair", "reject_repair")
ACTION_NAMES = {"ack": ("确认收到", "acknowledge"), "close": ("已修复结案", "close as repaired"),
                "accident": ("上报事故", "report an accident"),
                "confirm_repair": ("确认修复申报", "confirm the repair claim"),
                "reject_repair": ("驳回修复申报", "reject the repair claim")}  # fmt: skip
SIGNED = ("action", "case", "device", "exp", "n", "officer")
MAX_PARAM = 200
"""Longest value a link parameter may have (ids, a nonce, a hex signature)."""


def canonical(params: Mapping[str, str]) -> str:
    return "&".join(f"{k}={quote(str(params[k]), safe='')}" for k in sorted(params) if k != "sig")


def signature(secret: str, params: Mapping[str, str]) -> str:
    return hmac.new(secret.encode(), canonical(params).encode(), hashlib.sha256).hexdigest()


def make_link(
    cfg: AckConfig, case_id: str, device: str, action: str, officer: str, now_ms: int
) -> str:
    """A link for ``officer`` (a directory id) to take ``action`` on the case, once."""
    params = {"case": case_id, "device": device, "action": action, "officer": officer,
              "n": secrets.token_urlsafe(12), "exp": str((now_ms + cfg.link_ttl_ms) // 1000)}  # fmt: skip
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
    if any(len(v) > MAX_PARAM for v in query.values()) or len(query) > 2 * len(SIGNED):
        raise Refused(400, "链接格式错误", "The link is malformed (too long).")
    if not all(v.isascii() for v in query.values()) or not re.fullmatch(
        r"[0-9a-f]{64}", query["sig"]
    ):
        raise Refused(400, "链接格式错误", "The link is malformed.")
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


class RedactedAccessLogger(AbstractAccessLogger):
    """aiohttp's access line with the request's secrets masked (``foundation.logs.redact``):
    whatever handler the process has, a link's ``sig`` never reaches a log."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %d %s "%s" %.6fs',
            request.remote, request.method, redact(request.path_qs), response.status,
            response.body_length, redact(request.headers.get("User-Agent", "")[:200]), time,
        )  # fmt: skip


class AttemptLimit:
    """Failed attempts per client address: ``burst`` at once, one more each ``per_s``.

    A guessed signature or token costs the guesser, not the officers: a client
    over its budget is answered 429 until the bucket refills. Accepted acts
    cost nothing.
    """

    def __init__(
        self, burst: int = 10, per_s: float = 6.0, clock: Callable[[], float] = time.monotonic
    ):
        self.burst, self.per_s, self.clock = burst, per_s, clock
        self.buckets: dict[str, tuple[float, float]] = {}

    def blocked(self, client: str) -> bool:
        tokens, _ = self._level(client)
        return tokens < 1

    def failed(self, client: str) -> None:
        tokens, now = self._level(client)
        self.buckets[client] = (max(0.0, tokens - 1), now)
        if len(self.buckets) > 10_000:  # forget the quietest clients first
            for key in sorted(self.buckets, key=lambda k: self.buckets[k][1])[:5_000]:
                del self.buckets[key]

    def _level(self, client: str) -> tuple[float, float]:
        now = self.clock()
        tokens, at = self.buckets.get(client, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) / self.per_s), now


class AckEndpoint:
    """The aiohttp application: links and the API, each act handed to the ``gate``.

    ``claim``/``release`` take and give back a link's single use (the outbox database).
    """

    def __init__(self, cfg: AckConfig, gate: Gate, clock: Callable[[], int],
                 claim: Callable[[str, str, str, int], bool],
                 release: Callable[[str], None],
                 limit: AttemptLimit | None = None):  # fmt: skip
        self.cfg, self.gate, self.clock = cfg, gate, clock
        self.claim, self.release = claim, release
        self.limit = limit or AttemptLimit()
        self.app = web.Application(client_max_size=64 * 1024)
        self.app.add_routes(
            [
                web.get("/ack", self.get),
                web.post("/ack", self.post),
                web.post("/cases/stage", self.stage),
                web.get("/healthz", self.health),
            ]
        )
        self.runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int) -> int:
        # one access line per request (the client, the request line with sig=/token masked by
        # foundation.logs' redaction, status, size, user agent, seconds): who knocked, and how often
        self.runner = web.AppRunner(
            self.app,
            access_log=logging.getLogger("citywatch.alerts.access"),
            access_log_class=RedactedAccessLogger,
        )
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

    @staticmethod
    def _client(request: web.Request) -> tuple[str, str]:
        return request.remote or "", request.headers.get("User-Agent", "")[:200]

    def _verified(self, request: web.Request) -> dict[str, str]:
        client, _ = self._client(request)
        if self.limit.blocked(client):
            raise Refused(
                429, "尝试次数过多，请稍后再试", "Too many failed attempts; try again later."
            )
        try:
            return verify(self.cfg, request.query, self.clock())
        except Refused:
            self.limit.failed(client)
            raise

    async def get(self, request: web.Request) -> web.Response:
        try:
            params = self._verified(request)
        except Refused as r:
            return page(r.status, r.zh, r.en)
        zh, en = ACTION_NAMES[params["action"]]
        form = (
            f"<p>案件 / case: <code>{html.escape(params['case'])}</code><br>设备 / device: "
            f"<code>{html.escape(params['device'])}</code><br>经办人 / officer: "
            f"<code>{html.escape(params['officer'])}</code></p>"
            f"<form method='post' action='/ack?{html.escape(request.query_string)}'>"
            f"<button style='font-size:1.4em;padding:.5em 1.5em'>{html.escape(zh)} / {html.escape(en)}</button></form>"
        )
        return page(200, f"请确认：{zh}", f"Please confirm: {en}", form)

    async def post(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if auth:
            return await self._bearer(request, auth)
        try:
            params = self._verified(request)
        except Refused as r:
            return page(r.status, r.zh, r.en)
        zh, en = ACTION_NAMES[params["action"]]
        nonce = params["n"]
        if not self.claim(nonce, params["officer"], params["case"], self.clock()):
            return page(
                200, f"已记录过：{zh}", f"Already recorded: {en}. Nothing more was changed."
            )
        client, agent = self._client(request)
        req = ActRequest(action=params["action"], device=params["device"], channel="link",
                         case_id=params["case"], client=client, user_agent=agent)  # fmt: skip
        outcome = await self.gate.for_link(params["officer"], f"link:{nonce}", req)
        if not outcome.accepted:
            self.release(nonce)
            return page(403, "未能记录", f"Not recorded: {outcome.message}")
        return page(200, f"已记录：{zh}", f"Recorded: {en}. Thank you.")

    async def stage(self, request: web.Request) -> web.Response:
        """The city platform drives a stage (docs/handover.md, "The incoming endpoint"):
        ``dispatch``, ``feedback`` or ``check`` with a personal token, through the gate."""
        return await self._bearer(request, request.headers.get("Authorization", ""), stage=True)

    async def _bearer(self, request: web.Request, auth: str, stage: bool = False) -> web.Response:
        client, agent = self._client(request)
        if self.limit.blocked(client):
            return web.json_response(
                {"error": "too many failed attempts; try again later"}, status=429
            )
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip().isascii():
            self.limit.failed(client)
            return web.json_response(
                {"error": "expected Authorization: Bearer <officer token>"}, status=401
            )
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "body must be JSON"}, status=400)
        error = _stage_body_error(body) if stage else _body_error(body)
        if error:
            return web.json_response({"error": error}, status=400)
        req = ActRequest(
            action=body["action"], device=body["device"], channel="api", case_id=body.get("case"),
            note=body.get("note"), at=body.get("at"), reason=body.get("reason"),
            client=client, user_agent=agent, passed=body.get("passed"),
            photos=tuple(body.get("photos") or ()),
        )  # fmt: skip
        outcome: Outcome = await self.gate.with_token(token.strip(), req)
        if not outcome.accepted:
            if outcome.out_of_turn is not None:  # the case is not in a stage that takes the act
                turn = outcome.out_of_turn
                return web.json_response(
                    {"error": outcome.message, "case": turn.case_id, "stage": turn.stage,
                     "action": turn.action, "allowed": list(turn.allowed)}, status=409,
                )  # fmt: skip
            if outcome.audit.officer == "":
                self.limit.failed(client)
                return web.json_response({"error": outcome.message}, status=401)
            return web.json_response({"error": outcome.message}, status=403)
        assert outcome.action is not None
        return web.json_response(
            {"ok": True, "message": outcome.message, "action": outcome.action.to_dict()}
        )


_BODY_TEXT = {"device": True, "action": True, "case": False, "note": False, "reason": False}


def _body_error(body: object) -> str | None:
    """Why an API body is malformed, or None: an object of the documented keys and types."""
    if not isinstance(body, dict):
        return "body must be a JSON object"
    unknown = sorted(set(body) - set(_BODY_TEXT) - {"at"})
    if unknown:
        extra = " (the token says who acts)" if "officer" in unknown else ""
        return f"unknown key(s) {', '.join(unknown)}{extra}; allowed: action, device, case, note, at, reason"
    for key, required in _BODY_TEXT.items():
        value = body.get(key)
        if value is None:
            if required:
                return f"missing {key}"
            continue
        if not isinstance(value, str) or (required and not value.strip()):
            return f"{key} must be text"
    at = body.get("at")
    if at is not None and type(at) is not int:
        return "at must be integer epoch milliseconds"
    return None


PLATFORM_STAGES = ("dispatch", "feedback", "check")
"""The stages the city's platform drives through ``POST /cases/stage``."""

_STAGE_KEYS = (*_BODY_TEXT, "at", "passed", "photos")


def _stage_body_error(body: object) -> str | None:
    """Why a ``/cases/stage`` body is malformed, or None (docs/handover.md has the keys)."""
    if not isinstance(body, dict):
        return "body must be a JSON object"
    unknown = sorted(set(body) - set(_STAGE_KEYS))
    if unknown:
        extra = " (the token says who acts)" if "officer" in unknown else ""
        return f"unknown key(s) {', '.join(unknown)}{extra}; allowed: {', '.join(_STAGE_KEYS)}"
    if body.get("action") not in PLATFORM_STAGES:
        return f"action must be one of {', '.join(PLATFORM_STAGES)}, got {body.get('action')!r:.40}"
    base = {k: v for k, v in body.items() if k not in ("passed", "photos")}
    error = _body_error(base)
    if error:
        return error
    passed = body.get("passed")
    if body["action"] == "check" and type(passed) is not bool:
        return "a check needs passed: true or false"
    if body["action"] != "check" and passed is not None:
        return "passed belongs to a check"
    photos = body.get("photos")
    if photos is not None:
        if body["action"] != "feedback":
            return "photos belong to a feedback"
        if (
            not isinstance(photos, list)
            or len(photos) > PHOTOS_MAX
            or not all(isinstance(p, str) and 0 < len(p) <= 500 and p.isprintable() for p in photos)
        ):
            return (
                f"photos: a list of at most {PHOTOS_MAX} references of 1-500 printable characters"
            )
    if body["action"] == "feedback" and not (
        isinstance(body.get("note"), str) and body["note"].strip()
    ):
        return "a feedback needs note: the unit's report as text"
    return None
