"""What an officer reads: notices about cases, rendered bilingual (Chinese first, English below).

A ``Notice`` is one meaningful change of one case for one receiver (opened,
deadline passed, accident, repaired/closed, N hours overdue, escalated to a
level, still unacknowledged). The group stage collects notices of one group
into one ``Message``; every channel sends a ``Message``: WeCom and DingTalk
the markdown, e-mail the subject and plain text, the JSON webhook ``data``.

Times are shown in the city's zone (``contract.clock``); the map link is
Amap's marker URL from the registry's lat/lon.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from contract import clock
from contract.cases import SEVERITY_NAMES
from contract.clock import local as local_time
from contract.officers import ROLE_NAMES
from contract.rules import RULES

HOUR_MS = clock.HOUR_MS


def _rule_names(rule: str, default: tuple[str, str]) -> tuple[str, str]:
    """(zh, en) of a rule id (contract.rules); ``default`` for an id this release does not know."""
    name = RULES.get(rule)
    return (name.zh, name.en) if name else default


def _severity_names(severity: str, default: tuple[str, str]) -> tuple[str, str]:
    return SEVERITY_NAMES.get(severity, default)


CHANGE_NAMES = {
    "open": ("新案件", "new case"),
    "reopened": ("重新打开", "reopened"),
    "escalated": ("已超过处置时限", "past its repair deadline"),
    "accident": ("发生事故", "accident reported"),
    "repaired": ("已修复", "repaired"),
    "closed": ("已结案", "closed"),
    "overdue": ("超期未修复", "still overdue"),
    "escalation": ("未确认，升级", "unacknowledged, escalated"),
    "reminder": ("仍未确认", "still unacknowledged"),
    "claim": ("修复时间待确认", "repair claim to decide"),
    "refused": ("阶段操作未执行", "stage act refused"),
    "booked": ("已计罚并结案", "booked and closed"),
    "unsilenced": ("静默已结束，案件仍未处置", "silence over, still open"),
    "uninhibited": (
        "关联案件已结束，本案仍未处置",
        "the case that explained it is over, still open",
    ),
}

CLAIM_KINDS = {"late_repair_claim": "readings", "backdated_close_claim": "close"}
"""The claims a manhole case event may carry (docs/rules.md, "Late repair claims",
"Backdated closes"), and the word for each in a claim notice's key."""

CLAIM_ACTIONS = ("confirm_repair", "reject_repair")

NO_LINKS = ("repaired", "closed", "booked", "refused")
"""Changes whose push offers no ack/close link: the case is over, or the push answers an act."""

REASON_MAX = 200
"""At most this many characters of an officer's reason are quoted in a push."""


def pending_claims(snapshot: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(kind, claim) of every pending claim of a case event, late readings' first."""
    detail = snapshot.get("detail") or {}
    out = []
    for field_name, kind in CLAIM_KINDS.items():
        claim = detail.get(field_name)
        if isinstance(claim, dict) and claim.get("status") == "pending":
            out.append((kind, claim))
    return out


def claim_key(case_id: str, kind: str, claim: dict[str, Any]) -> str:
    """Idempotency key of a claim notice: one push per claim, however often the case repeats it.

    A late repair claim is claimed anew (a new ``at``) when more late readings change what
    it would prove; that is a new claim and a new push.
    """
    return f"{case_id}:claim:{kind}:{claim.get('at')}"


def payer_rows(payers: dict[str, int]) -> list[dict[str, Any]]:
    """``CaseInfo.payers`` as the webhook carries them: ``{payer, payer_type, amount_yuan}``,
    by payer."""
    out = []
    for k, yuan in sorted(payers.items()):
        payer_type, _, payer = k.partition(":")
        out.append({"payer": payer, "payer_type": payer_type, "amount_yuan": yuan})
    return out


def _link_actions() -> frozenset[str]:
    """The actions the ack endpoint takes from a signed link (alerts/http.py): the others
    are offered as commands only, never as a link that would answer 400."""
    from alerts import http

    return frozenset(getattr(http, "LINK_ACTIONS", ()))


def _plain(text: object, limit: int = REASON_MAX) -> str:
    """Officer text quoted in a push: one line, bounded, no markdown link brackets."""
    one = " ".join(str(text).split())
    one = "".join(ch for ch in one if ch.isprintable())
    if len(one) > limit:
        one = one[: limit - 1] + "…"
    return one.replace("[", "［").replace("]", "］")


def _duration(ms: int) -> tuple[str, str]:
    """(zh, en) of a lateness: hours and minutes."""
    minutes = max(0, int(ms)) // 60_000
    h, m = divmod(minutes, 60)
    if h and m:
        return f"{h} 小时 {m} 分钟", f"{h} h {m} min"
    if h:
        return f"{h} 小时", f"{h} h"
    return f"{m} 分钟", f"{m} min"


@dataclass
class CaseInfo:
    """What the alerts service knows of a case: its latest snapshot plus the money seen for it."""

    case_id: str
    snapshot: dict[str, Any]
    yuan: int = 0
    hours_booked: int = 0
    last_state: str | None = None
    """Last pushed lifecycle state (open/escalated/repaired/closed/reopened)."""
    accident: bool = False
    escalation: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per route id: ``{"level": levels reached, "reminders": reminders sent}``."""
    claims: list[str] = field(default_factory=list)
    """Keys (``claim_key``) of the claims already pushed: a pending claim repeated by every
    later snapshot of the case is pushed once, also after its notice rows were pruned."""
    payers: dict[str, int] = field(default_factory=dict)
    """``<payer_type>:<payer>`` -> yuan counted for the case: who pays, told in a ``booked`` push."""
    booked_due: int | None = None
    """A case booked and closed at once: when (service clock) its one ``booked`` notice is made,
    after the settle time that lets its ledger entries (another topic) arrive."""

    @property
    def acknowledged(self) -> bool:
        d = self.snapshot.get("detail") or {}
        return d.get("acknowledged_at") is not None or self.snapshot.get("state") == "acknowledged"

    @property
    def ended(self) -> bool:
        return self.snapshot.get("state") in ("repaired", "closed")

    def labels(self) -> dict[str, str]:
        s = self.snapshot
        return {
            k: str(s.get(k) or "")
            for k in ("kind", "rule", "severity", "district", "grid", "unit", "device")
        } | {"case_id": self.case_id}

    def to_row(self) -> dict[str, Any]:
        return {
            "snapshot": self.snapshot, "yuan": self.yuan, "hours_booked": self.hours_booked,
            "last_state": self.last_state, "accident": self.accident, "escalation": self.escalation,
            "claims": self.claims, "payers": self.payers, "booked_due": self.booked_due,
        }  # fmt: skip

    @classmethod
    def from_row(cls, case_id: str, d: dict[str, Any]) -> CaseInfo:
        return cls(case_id=case_id, snapshot=d["snapshot"], yuan=d["yuan"], hours_booked=d["hours_booked"],
                   last_state=d["last_state"], accident=d["accident"], escalation=d["escalation"],
                   claims=list(d.get("claims") or []), payers=dict(d.get("payers") or {}),
                   booked_due=d.get("booked_due"))  # fmt: skip


@dataclass(frozen=True)
class Notice:
    """One thing to tell one receiver about one case."""

    key: str
    """Idempotency key of the change (``case_id:state:at``, ``entry id``, ``case_id:esc:route:level``)."""
    case_id: str
    change: str
    at: int
    route_id: str
    receiver: str
    group_key: str
    level_name: str = ""
    hours: int | None = None
    claim: dict[str, Any] | None = field(default=None, hash=False)
    """A ``claim`` notice: the claim as the case event carried it, plus ``kind``
    (``CLAIM_KINDS``): what is pushed is what was claimed, whatever happens to it later."""
    refused: dict[str, Any] | None = field(default=None, hash=False)
    """A ``refused`` notice: the stage act the workflow refused (``detail.workflow.refused``:
    the act, who, when, the reason in both languages, the acts the stage takes)."""
    district: str = ""
    """The district the notice is told for when it is not its case's own: a ``booked`` notice
    routed for a paying district (decision 015). Its push mentions, and makes its links for,
    that district's officers; empty: the case's district."""

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "case_id": self.case_id, "change": self.change, "at": self.at,
                "route_id": self.route_id, "receiver": self.receiver, "group_key": self.group_key,
                "level_name": self.level_name, "hours": self.hours, "claim": self.claim,
                "refused": self.refused, "district": self.district}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Notice:
        return cls(**d)


@dataclass(frozen=True)
class Message:
    """One push to one receiver: rendered once, stored in the outbox, sent by every channel of it."""

    key: str
    """Idempotency key of the push (stable across retries and restarts)."""
    receiver: str
    title: str
    markdown: str
    text: str
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "receiver": self.receiver, "title": self.title, "markdown": self.markdown,
                "text": self.text, "data": self.data}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Message:
        return cls(**d)


def map_link(lat: float | None, lon: float | None, name: str = "") -> str | None:
    if lat is None or lon is None:
        return None
    from urllib.parse import quote

    link = f"https://uri.amap.com/marker?position={lon:.6f},{lat:.6f}"
    return link + (f"&name={quote(name)}" if name else "")


def _yuan(n: int) -> str:
    return f"{n:,}"


@dataclass
class Renderer:
    """Renders a group of notices into one ``Message``.

    ``locate(device)`` gives (lat, lon) from the registry; ``ack_link(case_id,
    device, action, receiver, district)`` a signed link (``district``: the notice's, empty for
    the case's own); ``now()`` the clock (epoch ms).
    """

    locate: Callable[[str], tuple[float | None, float | None]]
    ack_link: Callable[[str, str, str, str, str], str]
    now: Callable[[], int]
    district_names: dict[str, str] = field(default_factory=dict)
    max_cases: int = 10

    def district(self, d: str) -> str:
        name = self.district_names.get(d)
        return f"{name}（{d}）" if name else d

    def render(self, key: str, receiver: str, officer: str, notices: Sequence[Notice],
               cases: dict[str, CaseInfo], receiver_label: str = "") -> Message:  # fmt: skip
        now = self.now()
        items = []
        for n in notices:
            info = cases.get(n.case_id)
            s = info.snapshot if info else {}
            device = str(s.get("device") or "")
            lat, lon = self.locate(device) if device else (None, None)
            deadline = s.get("deadline")
            overdue_h = (
                max(0, (now - deadline) // HOUR_MS)
                if deadline is not None and not (info and info.ended)
                else None
            )
            if info and info.ended and deadline is not None:
                end = (s.get("detail") or {}).get("repair_at") or s.get("at")
                overdue_h = max(0, (int(end) - deadline) // HOUR_MS)
            items.append(
                {
                    "notice": n,
                    "snapshot": s,
                    "info": info,
                    "device": device,
                    "lat": lat,
                    "lon": lon,
                    "overdue_h": overdue_h,
                    "ack": self.ack_link(n.case_id, device, "ack", officer, n.district)
                    if device
                    else None,
                    "close": self.ack_link(n.case_id, device, "close", officer, n.district)
                    if device
                    else None,
                }
            )
            if n.change == "claim" and n.claim is not None:
                items[-1].update(self._decision(n, device, officer))
        title_zh, title_en = self._titles(items)
        md = self._markdown(items, title_zh, title_en)
        text = self._text(items, title_zh, title_en)
        data = {
            "id": key,
            "receiver": receiver,
            "receiver_label": receiver_label,
            "title": f"{title_zh} / {title_en}",
            "created_at": now,
            "cases": [self._case_data(it) for it in items],
        }
        return Message(
            key=key,
            receiver=receiver,
            title=f"{title_zh} / {title_en}",
            markdown=md,
            text=text,
            data=data,
        )

    # ------------------------------------------------------------------ claims

    def _decision(self, n: Notice, device: str, officer: str) -> dict[str, Any]:
        """How to decide a claim: signed links where the endpoint takes the action, and the
        commands a supervisor runs with their own token (docs/officers.md) always."""
        links = _link_actions()
        out: dict[str, Any] = {"commands": {}}
        for action in CLAIM_ACTIONS:
            word = "confirm" if action == "confirm_repair" else "reject"
            ok = bool(device) and action in links
            out[word] = (
                self.ack_link(n.case_id, device, action, officer, n.district) if ok else None
            )
            out["commands"][word] = f"citywatch case {action} {device} --case {n.case_id}"
        return out

    @staticmethod
    def _claim_lines(it: dict[str, Any]) -> tuple[list[str], list[str]]:
        """(zh, en) lines of a claim notice: what is claimed, by whom, what it would reverse,
        who decides it. Officer text is quoted as plain text (``_plain``)."""
        n = it["notice"]
        c = n.claim or {}
        repair = local_time(c.get("repair_at"), empty="-")
        late_zh, late_en = _duration(int(c.get("lateness_ms") or 0))
        if c.get("kind") == "close":
            officer = _plain(c.get("claimed_by") or "-", 64)
            role_zh, role_en = ROLE_NAMES.get(str(c.get("role")), ("", ""))
            by_zh = f"{officer}{f'（{role_zh}）' if role_zh else ''}补记结案，补记 {late_zh}"
            by_en = (
                f"{officer}{f' ({role_en})' if role_en else ''} closed it backdated by {late_en}"
            )
            if c.get("reason"):
                by_zh += f"，理由：{_plain(c['reason'])}"
                by_en += f", reason: {_plain(c['reason'])}"
            stopped = local_time(c.get("at"), empty="-")
            clock_zh = f"计时已于 {stopped} 停止"
            clock_en = f"the clock stopped at {stopped}"
            who_zh = f"须由 {officer} 以外的督办确认；本人确认无效"
            who_en = f"A supervisor other than {officer} confirms it; the claimant's own confirmation does nothing"
        else:
            k = len(c.get("readings") or ()) or 1
            by_zh = f"设备 {it['device']} 的迟到读数 {k} 条，迟到 {late_zh}"
            by_en = f"the device's own late reading{'s' if k > 1 else ''} ({k}), {late_en} late"
            clock_zh, clock_en = "等待期间继续计时", "the clock runs on while it waits"
            who_zh, who_en = "须由督办确认或驳回", "A supervisor confirms or rejects it"
        hours, yuan = c.get("hours_at_stake"), c.get("yuan_at_stake")
        if hours is not None and yuan is not None:
            stake_zh = f"如确认：冲销 {hours} 小时，{_yuan(int(yuan))} 元（{clock_zh}）"
            stake_en = f"If confirmed: {hours} h reversed, {_yuan(int(yuan))} yuan ({clock_en})"
        else:  # a claim made before the stake was recorded
            stake_zh = f"如确认：冲销修复时间之后已计的小时（{clock_zh}）"
            stake_en = (
                f"If confirmed: the hours booked after the claimed repair are reversed ({clock_en})"
            )
        zh = [f"申报修复时间：{repair}（北京时间），{by_zh}", stake_zh, who_zh]
        en = [f"Claimed repair: {repair} (Asia/Shanghai), {by_en}", stake_en, who_en]
        return zh, en

    # ------------------------------------------------------------------ pieces

    def _titles(self, items: list[dict[str, Any]]) -> tuple[str, str]:
        if len(items) == 1:
            it = items[0]
            s, n = it["snapshot"], it["notice"]
            rz, re_ = _rule_names(s.get("rule", ""), (s.get("rule", "案件"), s.get("rule", "case")))
            cz, ce = self._change(n)
            where = s.get("address") or it["device"] or n.case_id
            return f"【{rz}·{cz}】{where}", f"{re_}: {ce} at {where}"
        rules = Counter(it["snapshot"].get("rule", "") for it in items)
        districts = sorted({it["snapshot"].get("district", "") for it in items} - {""})
        where_zh = "、".join(self.district(d) for d in districts[:3]) or "多个区域"
        where_en = ", ".join(districts[:3]) or "several districts"
        parts_zh = "，".join(f"{_rule_names(r, (r, r))[0]} {c} 起" for r, c in rules.most_common())
        parts_en = ", ".join(
            f"{c} × {_rule_names(r, (r, r))[1].lower()}" for r, c in rules.most_common()
        )
        return f"【城市管理告警】{where_zh}：{parts_zh}", f"citywatch: {parts_en} in {where_en}"

    @staticmethod
    def _change(n: Notice) -> tuple[str, str]:
        cz, ce = CHANGE_NAMES.get(n.change, (n.change, n.change))
        if n.change == "overdue" and n.hours is not None:
            return f"超期 {n.hours} 小时未修复", f"{n.hours} h past the deadline"
        if n.change in ("escalation", "reminder") and n.level_name:
            zh, _, en = n.level_name.partition(" / ")
            return f"{cz}至{zh}", f"{ce} to {en or zh}"
        return cz, ce

    def _payers(self, it: dict[str, Any]) -> tuple[str, str]:
        """(zh, en) of who pays what, for a ``booked`` push: "金水区（jinshui） 30,000 元，..."."""
        info = it["info"]
        rows = payer_rows(info.payers if info else {})
        zh = "，".join(
            f"{self.district(r['payer']) if r['payer_type'] == 'district_government' else r['payer']}"
            f" {_yuan(r['amount_yuan'])} 元"
            for r in rows
        )
        en = ", ".join(f"{r['payer']} {_yuan(r['amount_yuan'])} yuan" for r in rows)
        return zh or "无（未计罚）", en or "nobody (nothing booked)"

    def _clock_zh(self, it: dict[str, Any]) -> str:
        info, s = it["info"], it["snapshot"]
        if it["notice"].change == "booked":
            return self._payers(it)[0]
        parts = []
        if s.get("deadline") is not None:
            if it["overdue_h"]:
                parts.append(f"已超时限 {it['overdue_h']} 小时")
            else:
                parts.append(f"处置时限 {local_time(s['deadline'], empty='-')}")
        if info and info.yuan:
            parts.append(f"累计扣罚 {_yuan(info.yuan)} 元")
        return "，".join(parts)

    def _clock_en(self, it: dict[str, Any]) -> str:
        info, s = it["info"], it["snapshot"]
        if it["notice"].change == "booked":
            return f"booked: {self._payers(it)[1]}"  # the markdown's line; the text labels it
        parts = []
        if s.get("deadline") is not None:
            if it["overdue_h"]:
                parts.append(f"{it['overdue_h']} h past the deadline")
            else:
                parts.append(f"repair by {local_time(s['deadline'], empty='-')}")
        if info and info.yuan:
            parts.append(f"{_yuan(info.yuan)} yuan so far")
        return ", ".join(parts)

    def _markdown(self, items: list[dict[str, Any]], tz: str, te: str) -> str:
        shown = items[: self.max_cases]
        more = len(items) - len(shown)
        zh = [f"### {tz}"]
        for it in shown:
            s, n = it["snapshot"], it["notice"]
            cz, _ = self._change(n)
            sz = _severity_names(s.get("severity", ""), (s.get("severity", ""), ""))[0]
            rz = _rule_names(s.get("rule", ""), (s.get("rule", ""), ""))[0]
            link = map_link(it["lat"], it["lon"], s.get("address", ""))
            where = s.get("address") or it["device"]
            zh.append(f"> **{rz}·{cz}**（{sz}）")
            zh.append(
                f"> 地点：{where}（{self.district(s.get('district', ''))}，网格 {s.get('grid', '-')}）"
                + (f" [地图]({link})" if link else "")
            )
            zh.append(f"> 设备：{it['device']}，责任单位：{s.get('unit', '-')}")
            zh.append(f"> 开始：{local_time(s.get('opened_at'), empty='-')}（北京时间）")
            clock = self._clock_zh(it)
            if clock:
                zh.append(f"> {'计罚' if n.change == 'booked' else '计时'}：{clock}")
            if n.change == "claim" and n.claim is not None:
                lines, _ = self._claim_lines(it)
                zh.extend(f"> {line}" for line in lines)
                links = [f"[{label}]({it[w]})" for w, label in (("confirm", "确认修复"), ("reject", "驳回"))
                         if it.get(w)]  # fmt: skip
                if links:
                    zh.append("> " + "　".join(links))
                zh.append(f"> 命令：`{it['commands']['confirm']}` 或 `{it['commands']['reject']}`")
            elif n.change == "refused" and n.refused is not None:
                zh.append(f"> 未执行：{_plain(n.refused.get('reason_zh', ''), 300)}")
            elif it["ack"] and n.change not in NO_LINKS:
                zh.append(f"> [确认收到]({it['ack']})　[已修复结案]({it['close']})")
            zh.append("")
        if more:
            zh.append(f"……另有 {more} 起，详见指挥中心大屏。")
        en = ["---", f"**{te}**"]
        for it in shown:
            s, n = it["snapshot"], it["notice"]
            _, ce = self._change(n)
            se = _severity_names(s.get("severity", ""), ("", s.get("severity", "")))[1]
            re_ = _rule_names(s.get("rule", ""), ("", s.get("rule", "")))[1]
            where = s.get("address") or it["device"]
            line = f"- {re_}: {ce} ({se}) at {where}, {s.get('district', '')} grid {s.get('grid', '-')}, since {local_time(s.get('opened_at'), empty='-')} (Asia/Shanghai)"
            clock = self._clock_en(it)
            if clock:
                line += f"; {clock}"
            if n.change == "claim" and n.claim is not None:
                _, lines = self._claim_lines(it)
                line += ". " + ". ".join(lines)
                links = [f"[{label}]({it[w]})" for w, label in (("confirm", "Confirm"), ("reject", "Reject"))
                         if it.get(w)]  # fmt: skip
                if links:
                    line += ". " + " ".join(links)
                line += f". Commands: `{it['commands']['confirm']}` or `{it['commands']['reject']}`"
            elif n.change == "refused" and n.refused is not None:
                line += f". Not done: {_plain(n.refused.get('reason_en', ''), 300)}"
            elif it["ack"] and n.change not in NO_LINKS:
                line += f". [Acknowledge]({it['ack']})"
            en.append(line)
        if more:
            en.append(f"... and {more} more.")
        return "\n".join(zh + en)

    def _text(self, items: list[dict[str, Any]], tz: str, te: str) -> str:
        shown = items[: self.max_cases]
        more = len(items) - len(shown)
        zh = [tz, ""]
        en = [te, ""]
        for it in shown:
            s, n = it["snapshot"], it["notice"]
            cz, ce = self._change(n)
            rz, re_ = _rule_names(s.get("rule", ""), (s.get("rule", ""), s.get("rule", "")))
            sz, se = _severity_names(
                s.get("severity", ""), (s.get("severity", ""), s.get("severity", ""))
            )
            where = s.get("address") or it["device"]
            link = map_link(it["lat"], it["lon"])
            zh.append(f"* {rz}·{cz}（{sz}）")
            zh.append(
                f"  地点：{where}（{self.district(s.get('district', ''))}，网格 {s.get('grid', '-')}）"
            )
            if link:
                zh.append(f"  地图：{link}")
            zh.append(f"  开始：{local_time(s.get('opened_at'), empty='-')}（北京时间）")
            if self._clock_zh(it):
                zh.append(f"  {'计罚' if n.change == 'booked' else '计时'}：{self._clock_zh(it)}")
            claim_en: list[str] = []
            if n.change == "claim" and n.claim is not None:
                claim_zh, claim_en = self._claim_lines(it)
                zh.extend(f"  {line}" for line in claim_zh)
                for w, label in (("confirm", "确认修复"), ("reject", "驳回")):
                    if it.get(w):
                        zh.append(f"  {label}：{it[w]}")
                zh.append(f"  命令：{it['commands']['confirm']}")
                zh.append(f"        {it['commands']['reject']}")
            elif n.change == "refused" and n.refused is not None:
                zh.append(f"  未执行：{_plain(n.refused.get('reason_zh', ''), 300)}")
            elif it["ack"] and n.change not in NO_LINKS:
                zh.append(f"  确认收到：{it['ack']}")
            en.append(f"* {re_}: {ce} ({se})")
            en.append(f"  Where: {where} ({s.get('district', '')}, grid {s.get('grid', '-')})")
            if link:
                en.append(f"  Map: {link}")
            en.append(f"  Since: {local_time(s.get('opened_at'), empty='-')} (Asia/Shanghai)")
            if self._clock_en(it):
                en.append(
                    f"  {'Booked' if n.change == 'booked' else 'Clock'}: {self._clock_en(it)}"
                )
            if claim_en:
                en.extend(f"  {line}" for line in claim_en)
                for w, label in (("confirm", "Confirm"), ("reject", "Reject")):
                    if it.get(w):
                        en.append(f"  {label}: {it[w]}")
                en.append(f"  Commands: {it['commands']['confirm']}")
                en.append(f"            {it['commands']['reject']}")
            elif n.change == "refused" and n.refused is not None:
                en.append(f"  Not done: {_plain(n.refused.get('reason_en', ''), 300)}")
            elif it["ack"] and n.change not in NO_LINKS:
                en.append(f"  Acknowledge: {it['ack']}")
        if more:
            zh.append(f"……另有 {more} 起。")
            en.append(f"... and {more} more.")
        return "\n".join(zh + ["", "-" * 40, ""] + en) + "\n"

    @staticmethod
    def _case_data(it: dict[str, Any]) -> dict[str, Any]:
        s, n, info = it["snapshot"], it["notice"], it["info"]
        return {
            "case_id": n.case_id, "change": n.change, "notice_key": n.key, "at": n.at,
            "rule": s.get("rule"), "kind": s.get("kind"), "state": s.get("state"), "severity": s.get("severity"),
            "device": it["device"], "district": s.get("district"), "grid": s.get("grid"), "unit": s.get("unit"),
            "address": s.get("address"), "lat": it["lat"], "lon": it["lon"],
            "map": map_link(it["lat"], it["lon"]),
            "opened_at": s.get("opened_at"), "deadline": s.get("deadline"),
            "hours_past_deadline": it["overdue_h"], "yuan_so_far": info.yuan if info else 0,
            "level": n.level_name or None, "ack_url": it["ack"],
        } | ({
            "claim": dict(n.claim), "confirm_url": it.get("confirm"), "reject_url": it.get("reject"),
            "commands": dict(it["commands"]),
        } if n.change == "claim" and n.claim is not None else {}) | (
            {"refused": dict(n.refused)} if n.refused is not None else {}
        ) | (
            {"payers": payer_rows(info.payers if info else {})} if n.change == "booked" else {}
        )  # fmt: skip
