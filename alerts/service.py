"""The alerts service: case events and ledger entries in, pushes out.

::

    <prefix>.cases ─┐                                                        ┌─► WeCom / DingTalk / webhook / e-mail / log
    <prefix>.penalties ─► changes ─► route ─► notices (sqlite) ─► group ─► outbox (sqlite) ─► deliver (retry, backoff)
                                      ▲                     escalate ─┘                         └─► <prefix>.alerts (a record per push)
           officers ─► /ack (signed link | bearer) ─► <prefix>.acks ─► worker ─► case event "acknowledged" stops escalation

* A *meaningful change* of a case is a push: opened, deadline passed
  (``escalated``), accident, repaired/closed, every ``notify.overdue_every_hours``
  hours past the deadline (from the ledger's hour entries), a pending claim
  (late repair or backdated close) an officer has to decide, a case booked and
  closed at once (``booked``, once, after ``BOOKED_SETTLE_MS``, with who pays what), a
  stage act the workflow refused (``refused``, to the officer who acted). Acknowledgements
  and notes are not pushed; they stop escalation.
* Idempotency keys: ``case_id:state:at`` for a state change,
  ``case_id:accident``, the ledger entry id for an overdue notice,
  ``case_id:esc:<route>:<level>`` for an escalation, ``case_id:claim:<kind>:<at>``
  for a claim, ``case_id:booked:opened_at``, ``case_id:refused:action:at:by``. A
  redelivered Kafka record inserts nothing new (``notices``
  primary key).
* Kafka offsets are committed after the notices they produced are committed
  to sqlite: a crash repeats records (deduplicated), never loses them.
* Silences (``<prefix>.silences``, read from its beginning at every start) and
  the routing file's ``inhibit_rules`` mute notices when their group is
  pushed, as Alertmanager mutes at notification time: a muted notice is not
  pushed but recorded on ``<prefix>.alerts`` (``status`` silenced/inhibited,
  naming the silence or the inhibiting case); the case, its escalation progress
  and the money go on untouched. Muted notices are not re-sent; when the
  silence ends or the inhibiting case is over, each case it muted that is still
  open and unacknowledged is told once (``unsilenced`` / ``uninhibited``): what
  Alertmanager's re-evaluation at the next flush amounts to for one-shot notices.

The consumer reads every partition of both topics itself (``assign``), and
commits its offsets under the consumer group ``<prefix>.alerts`` (so lag is
visible to the usual Kafka tools). Run one alerts process per city: the
outbox and the escalation timers are its local state.

CLI wiring: ``add_arguments(parser)`` and ``main(args, settings)``;
``python -m alerts.service`` runs it with settings from the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from alerts import escalate
from alerts.channels import make_channel
from alerts.channels.plugin import Channel, OptionError, Result
from alerts.gate import Gate
from alerts.group import Grouper, group_key
from alerts.http import AckEndpoint, make_link
from alerts.inhibit import Inhibitor
from alerts.message import CaseInfo, Message, Notice, Renderer, claim_key, pending_claims
from alerts.outbox import Deliverer, OutboxRow, Store, message_key
from alerts.policy import load_policy
from alerts.route import AckConfig, RoutingConfig, load_routes
from alerts.silence import Silence, SilenceError, Silences
from contract.cases import OfficerAction
from contract.handover import handover_push
from contract.officers import AuditRecord
from foundation.errors import ConfigError
from foundation.logs import register_secret, register_secrets
from foundation.settings import MAKE_SECRET, MIN_SECRET_BYTES, AlertsSettings, Settings
from registry.officer_tokens import TokenStore
from registry.officers import load_directory

log = logging.getLogger("citywatch.alerts")

DECISIONS = ("confirm_repair", "reject_repair")
SUPERVISOR_ROLES = ("district_supervisor", "city_supervisor")
PUSH_STATES = ("open", "reopened", "escalated", "repaired", "closed")
BOOKED_SETTLE_MS = 2_000
"""A case booked and closed at once (an overload at the weigh station, an illegal operation:
the event is the whole case) is told once, as ``booked``, this long (service clock) after its
case event: its ledger entries travel on another topic, and the push names who pays what. A case
is "at once" when it ends within this long of its opening (event time) before any push told of
it; an ``open`` still waiting in its group when such a close follows is replaced by the one
``booked`` (docs/alerts.md, "What is pushed")."""
FORGET_AFTER_MS = 7 * 24 * 3600_000
"""Ended cases, sent notices and finished outbox rows are kept this long (a late repeat is still recognised)."""
PRUNE_EVERY_S = 600
FETCH_MAX_WAIT_MS = 50
"""How long the broker may hold a fetch for more data: the floor of the push latency (aiokafka's default is 500)."""


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class AlertsService:
    """One alerts process.

    ``settings``: Kafka bootstrap and topic prefix, registry path (for map links).
    ``routes_path``: the routing file (validated here: ``ConfigError`` on a mistake).
    ``state_dir``: where ``alerts.sqlite`` (the outbox) lives.
    ``clock``: epoch ms; everything timed (group_wait, escalation, retries, link expiry) reads it.
    ``http_port``: override the routing file's ``ack.listen`` port (0: any free port; -1: no endpoint;
    None: as configured).
    ``submit``: how an acknowledgement is published (default ``alerts.acks.submit``).
    """

    def __init__(
        self,
        settings: Settings,
        routes_path: str | Path,
        state_dir: str | Path,
        clock: Callable[[], int] = wall_clock_ms,
        registry: Any = None,
        http_port: int | None = None,
        http_host: str | None = None,
        submit: Callable[[OfficerAction], Any] | None = None,
        poll_ms: int = 50,
        audit: Callable[[AuditRecord], Any] | None = None,
    ):
        self.settings = settings
        self.config: RoutingConfig = load_routes(routes_path)
        self.config.ack = ack_config(settings.alerts, self.config, routes_path)
        self.channels: dict[tuple[str, int], Channel] = build_channels(self.config)
        self.clock = clock
        self.poll_ms = poll_ms
        self.registry = registry if registry is not None else _load_registry(settings)
        self.store = Store(Path(state_dir) / "alerts.sqlite")
        self.cases: dict[str, CaseInfo] = self.store.load_cases()
        self.grouper = Grouper()
        self.deliverer = Deliverer(
            self.store, self.channels, self.config.delivery, clock, on_done=self._pushed
        )
        self.directory = load_directory(settings.paths.officers)
        self.renderer = Renderer(
            locate=self._locate,
            ack_link=self._ack_link,
            now=clock,
            district_names=self.config.district_names,
            max_cases=self.config.max_cases_in_message,
        )
        self.http_port = http_port
        self.http_host = http_host
        self._submit = submit
        self._audit = audit
        self.gate = Gate(
            lambda: self.directory,
            TokenStore(Path(settings.paths.state_dir) / "officers"),
            load_policy(settings.paths.policy),
            lambda device: self.registry.get(device) if self.registry is not None else None,
            self._submit_action,
            self._publish_audit,
            clock,
            stage_of=self.stage_of,
        )
        self.records: list[dict[str, Any]] = []
        """Pushes finished (and notices muted) since the last produce to ``<prefix>.alerts``."""
        self.esc_due: dict[str, int] = {}
        self.booked_due: dict[str, int] = {}
        """Cases booked at once whose ``booked`` notice waits out ``BOOKED_SETTLE_MS``."""
        self.stats = {"events": 0, "entries": 0, "notices": 0, "messages": 0, "muted": 0}
        self.silences = Silences(self._stored_silences())
        self.inhibitor = Inhibitor(self.config.inhibit_rules)
        self.mutes: dict[tuple[str, str], set[str]] = self.store.load_mutes()
        """(silence|inhibit, silence id | source case id) -> cases it muted a notice of."""
        self.untold: dict[str, tuple[str, str]] = {}
        """Cases that were over when what muted them let go, nobody told of them: their end
        notice is not pushed either (as Alertmanager sends no resolved for an alert it never
        notified). In memory: after a restart such an end is pushed, which says no more than it is."""
        self.http: AckEndpoint | None = None
        self.reread = False
        """The broker restarted (``broker_alert``): its topics are read again from their start."""
        self._restore()

    # ------------------------------------------------------------------ start-up

    def _restore(self) -> None:
        now = self.clock()
        for info in self.cases.values():
            self._schedule(info)
            self._index(info)
            if info.booked_due is not None:  # a restart inside the settle time: still told once
                self.booked_due[info.case_id] = info.booked_due
        routes = {r.id: r for r in self.config.routes()}
        restored = 0
        for n, created in self.store.pending_notices():
            route = routes.get(n.route_id)
            if route is None or n.receiver not in self.config.receivers:
                log.warning("notice %s for route %s / receiver %s: no longer in the routing file, sending it to the"
                            " default receiver", n.key, n.route_id, n.receiver)  # fmt: skip
                route = self.config.root
            wait = max(0, created + route.group_wait_ms - now)
            self.grouper.add(n, wait, route.group_interval_ms, now)
            restored += 1
        if restored:
            log.info(
                "restored %d notices not yet pushed; outbox: %s", restored, self.store.counts()
            )

    def _stored_silences(self) -> list[Silence]:
        out = []
        for d in self.store.load_silences():
            try:
                out.append(Silence.from_dict(d))
            except SilenceError as exc:
                log.warning("outbox silence skipped: %s", exc)
        return out

    def stage_of(self, device: str, case_id: str | None) -> tuple[str, str] | None:
        """The current stage of ``device``'s case (``case_id``, else its one case in the
        workflow) as the latest snapshot on ``<prefix>.cases`` says it, for the gate; None
        when this service does not know it (the worker, which owns the flow, judges then)."""
        if case_id is not None:
            info = self.cases.get(case_id)
            flow = (info.snapshot.get("detail") or {}).get("workflow") if info else None
            return (case_id, str(flow["stage"])) if flow and flow.get("stage") else None
        live, over = [], []
        for info in self.cases.values():
            s = info.snapshot
            flow = (s.get("detail") or {}).get("workflow")
            if s.get("device") != device or not flow or not flow.get("stage"):
                continue
            (over if flow["stage"] == "evaluated" else live).append(
                (int(s.get("at") or 0), info.case_id, str(flow["stage"]))
            )
        if len(live) == 1:
            return live[0][1], live[0][2]
        if not live and over:  # only cases that are over: the latest of them
            return max(over)[1], max(over)[2]
        return None  # none known, or several (the act must name one: the worker says so)

    def _locate(self, device: str) -> tuple[float | None, float | None]:
        dev = self.registry.get(device) if self.registry is not None else None
        return (dev.lat, dev.lon) if dev is not None else (None, None)

    # ------------------------------------------------------------------ the stages, callable without Kafka

    def accept(self, records: list[tuple[str, dict[str, Any]]]) -> int:
        """Take a batch of (``cases``|``penalties``, record) in one transaction; return notices accepted."""
        n = 0
        with self.store.transaction():
            for kind, rec in records:
                if kind == "silences":
                    self.on_silence(rec)
                    continue
                n += self.on_case_event(rec) if kind == "cases" else self.on_entry(rec)
        return n

    def on_silence(self, rec: dict[str, Any]) -> bool:
        """A version of a silence from ``<prefix>.silences``; True if it is news. A record that
        is not a silence is logged and skipped (the topic is shared; nothing half-applied)."""
        try:
            silence = Silence.from_dict(rec)
        except SilenceError as exc:
            log.warning("%s: skipped: %s", "silences", exc)
            return False
        if not self.silences.apply(silence):
            return False
        self.store.save_silence(silence.to_dict())
        log.info("%s (%s, by %s)", silence.describe(), silence.state(self.clock()),
                 silence.expired_by or silence.created_by)  # fmt: skip
        return True

    def on_case_event(self, ev: dict[str, Any]) -> int:
        self.stats["events"] += 1
        cid = ev["case_id"]
        now = self.clock()
        handed = self._hand_over(ev, now)  # every change, even of a snapshot older than the latest
        handed += self._notify_refused(ev, now)
        info = self.cases.get(cid)
        if info is None:
            info = self.cases[cid] = CaseInfo(cid, snapshot=ev)
        elif int(ev.get("at") or 0) >= int(info.snapshot.get("at") or 0) or info.snapshot.get(
            "_partial"
        ):
            info.snapshot = ev
        else:
            return handed  # older than what we know (a redelivery after newer events): nothing new in it
        changes: list[tuple[str, str, int | None]] = []
        state = ev.get("state")
        detail = ev.get("detail") or {}
        quiet = bool(detail.get("planned_works")) and not detail.get("escalated")
        # announced works (报备): nothing is pushed until they overrun their window (docs/rules.md)
        if state in PUSH_STATES and state != info.last_state and not quiet:
            if self._booked_at_once(info, ev, now):
                info.last_state = state  # told as ``booked`` once the settle time is over
            else:
                changes.append((state, f"{cid}:{state}:{ev['at']}", None))
                info.last_state = state
        if (ev.get("detail") or {}).get("accident_at") is not None and not info.accident:
            info.accident = True
            changes.append(("accident", f"{cid}:accident", None))
        accepted = handed + sum(
            self._notify(info, change, key, int(ev["at"]), hours, now)
            for change, key, hours in changes
        )
        accepted += self._notify_claims(info, ev, now)
        self.store.save_case(info, now)
        self._schedule(info)
        self._index(info)
        return accepted

    def _hand_over(self, ev: dict[str, Any], now: int) -> int:
        """Each stage change the event made, as one push to the platform's receiver (routing file
        ``handover``; docs/handover.md): keyed by the change's id, so a redelivered event adds no
        outbox row and every retry carries the same ``Idempotency-Key``. Silences do not apply:
        this is the platform's record, not an officer's alarm."""
        name = self.config.handover
        flow = (ev.get("detail") or {}).get("workflow") or {}
        changes = flow.get("changes") or []
        if name is None or not changes:
            return 0
        receiver = self.config.receivers[name]
        made = 0
        with self.store.transaction():
            for change in changes:
                payload = handover_push(ev, change)
                text = f"{ev['case_id']}: {payload['stage']['change_name']}"
                msg = Message(payload["id"], receiver.name, text, text, text, payload)
                made += bool(
                    self.store.enqueue(
                        [], msg, [(c.type, c.target) for c in receiver.channels], now
                    )
                )
        if made:
            self.deliverer.pump()
        return made

    def _booked_at_once(self, info: CaseInfo, ev: dict[str, Any], now: int) -> bool:
        """Whether this end is that of a case booked and closed at once (``BOOKED_SETTLE_MS``):
        then its ``booked`` notice is scheduled, and an ``open`` still waiting is withdrawn."""
        if ev.get("state") not in ("repaired", "closed") or info.booked_due is not None:
            return False
        opened = ev.get("opened_at")
        if opened is None or int(ev["at"]) - int(opened) > BOOKED_SETTLE_MS:
            return False
        if info.last_state is not None:
            open_key = f"{info.case_id}:{info.last_state}:{opened}"
            if info.last_state != "open" or not self._withdraw(open_key, now):
                return False  # the opening was pushed already: its close is an ordinary one
        info.booked_due = now + BOOKED_SETTLE_MS
        self.booked_due[info.case_id] = info.booked_due
        return True

    def _withdraw(self, key: str, now: int) -> bool:
        """Take back the notices of ``key`` that no push carries yet; False if one went out."""
        if not self.store.withdraw_notices(key, "merged:booked"):
            return False
        self.grouper.withdraw(key)
        return True

    def _notify_booked(self, info: CaseInfo, now: int) -> int:
        """The one push of a case booked at once: routed like its other notices, and also to the
        receivers of each paying district's routes (a route matching ``district=<payer>``)."""
        at = int(info.snapshot.get("opened_at") or info.snapshot.get("at") or now)
        key = f"{info.case_id}:booked:{at}"
        labels = info.labels()
        districts = [labels["district"]] + sorted(
            {k.partition(":")[2] for k in info.payers if k.startswith("district_government:")}
            - {labels["district"]}
        )
        accepted = 0
        for district in districts:
            where = labels | {"district": district}
            told_for = "" if district == labels["district"] else district  # whose officers
            for route in self.config.match(where):
                gk = group_key(where, route.group_by)
                for receiver in escalate.reached_receivers(info, route, self.config):
                    n = Notice(key=key, case_id=info.case_id, change="booked", at=at,
                               route_id=route.id, receiver=receiver, group_key=gk,
                               district=told_for)  # fmt: skip
                    accepted += self._accept(n, route.group_wait_ms, route.group_interval_ms, now)
        info.booked_due = None
        self.booked_due.pop(info.case_id, None)
        self.store.save_case(info, now)
        return accepted

    def _notify_refused(self, ev: dict[str, Any], now: int) -> int:
        """A stage act the workflow refused (``detail.workflow.refused``: the gate's view lagged,
        or the act bypassed it): one ``refused`` notice to the receivers that reach the acting
        officer, so they learn it did not take effect (key: case, act, its instant, who)."""
        refused = ((ev.get("detail") or {}).get("workflow") or {}).get("refused")
        if not isinstance(refused, dict):
            return 0
        cid = ev["case_id"]
        info = self.cases.get(cid) or CaseInfo(cid, snapshot=ev)
        key = f"{cid}:refused:{refused.get('action')}:{refused.get('at')}:{refused.get('by')}"
        labels = info.labels()
        routes = self.config.match(labels)
        device = str(ev.get("device") or "")
        officer = str(refused.get("officer") or "")
        mine = [name for name in self.config.receivers
                if officer and self.link_officer(name, device) == officer]  # fmt: skip
        if not mine:
            o = self.directory.get(officer) if officer else None
            mine = [r.name for r in self.config.receivers.values()
                    if o is not None and set(r.roles) & set(o.roles)]  # fmt: skip
        accepted = 0
        for route in routes[:1]:
            gk = group_key(labels, route.group_by)
            for receiver in mine or [route.receiver]:
                n = Notice(key=key, case_id=cid, change="refused", at=int(refused.get("at") or ev["at"]),
                           route_id=route.id, receiver=receiver, group_key=gk, refused=dict(refused))  # fmt: skip
                accepted += self._accept(n, route.group_wait_ms, route.group_interval_ms, now)
        return accepted

    def _notify_claims(self, info: CaseInfo, ev: dict[str, Any], now: int) -> int:
        """A pending claim the case event carries and no push told yet: one notice to the
        case's route (docs/alerts.md, "Claims"). Money waits on an officer's decision, so the
        people who can make it must hear of it; the key (``claim_key``) makes it once."""
        accepted = 0
        for kind, claim in pending_claims(ev):
            key = claim_key(info.case_id, kind, claim)
            if key in info.claims:
                continue
            info.claims.append(key)
            at = int(claim.get("at") or ev["at"])
            accepted += self._notify(info, "claim", key, at, None, now, {**claim, "kind": kind})
        return accepted

    def on_entry(self, e: dict[str, Any]) -> int:
        self.stats["entries"] += 1
        cid = e["case_id"]
        if not self.store.add_entry(e["id"], cid, int(e["amount_yuan"])):
            return 0
        now = self.clock()
        info = self.cases.get(cid)
        if info is None:  # the entry overtook its case event (another topic): keep what it says
            info = self.cases[cid] = CaseInfo(cid, snapshot={
                "case_id": cid, "rule": str(e.get("rule", "")).split(".")[0], "kind": str(e.get("rule", "")).split(".")[0],
                "device": e.get("device"), "district": e.get("district"), "severity": "major", "state": "open",
                "at": 0, "opened_at": None, "deadline": None, "detail": {}, "_partial": True,
            })  # fmt: skip
            self._index(info)
        info.yuan += int(e["amount_yuan"])
        payer = f"{e.get('payer_type') or ''}:{e.get('payer') or ''}"
        info.payers[payer] = info.payers.get(payer, 0) + int(e["amount_yuan"])
        accepted = 0
        k = e.get("hour_index")
        if k is not None and e.get("reverses") is None:
            info.hours_booked = max(info.hours_booked, int(k))
            if int(k) % self.config.overdue_every_hours == 0:
                accepted = self._notify(info, "overdue", e["id"], int(e["accrued_at"]), int(k), now)
        self.store.save_case(info, now)
        return accepted

    def _notify(
        self, info: CaseInfo, change: str, key: str, at: int, hours: int | None, now: int,
        claim: dict[str, Any] | None = None,
    ) -> int:  # fmt: skip
        labels = info.labels()
        accepted = 0
        for route in self.config.match(labels):
            gk = group_key(labels, route.group_by)
            for receiver in escalate.reached_receivers(info, route, self.config):
                n = Notice(key=key, case_id=info.case_id, change=change, at=at, route_id=route.id,
                           receiver=receiver, group_key=gk, hours=hours, claim=claim)  # fmt: skip
                accepted += self._accept(n, route.group_wait_ms, route.group_interval_ms, now)
        return accepted

    def _accept(self, n: Notice, wait_ms: int, interval_ms: int, now: int) -> int:
        if not self.store.add_notice(n, now):
            return 0
        self.grouper.add(n, wait_ms, interval_ms, now)
        self.stats["notices"] += 1
        return 1

    def _schedule(self, info: CaseInfo) -> None:
        if info.acknowledged or info.ended:
            self.esc_due.pop(info.case_id, None)
            return
        due = escalate.next_due(info, self.config.match(info.labels()), self.config)
        if due is None:
            self.esc_due.pop(info.case_id, None)
        else:
            self.esc_due[info.case_id] = due

    # ------------------------------------------------------------------ silences and inhibition

    def mute_labels(self, info: CaseInfo) -> dict[str, str]:
        """What silences and inhibition rules match on (``alerts.matchers.MUTE_LABELS``): the
        routing labels plus the lamp's ``cabinet`` and ``circuit``, from a circuit case's own
        detail, else from the registry."""
        labels = info.labels()
        detail = info.snapshot.get("detail") or {}
        dev = (
            self.registry.get(labels["device"])
            if self.registry is not None and labels["device"]
            else None
        )
        for key in ("cabinet", "circuit"):
            labels[key] = str(detail.get(key) or getattr(dev, key, None) or "")
        return labels

    def _index(self, info: CaseInfo) -> None:
        """Keep the inhibitor's view of the case: its labels, and whether it is firing."""
        if self.inhibitor.rules:
            self.inhibitor.update(info.case_id, self.mute_labels(info), not info.ended)

    def muted(
        self, info: CaseInfo, now: int, change: str = ""
    ) -> tuple[str, list[str], str] | None:
        """(silence|inhibit, who mutes it, why in words) for a case's notice now, or None.

        Inhibition first, then silences, as Alertmanager's notification pipeline does."""
        if change in ("repaired", "closed", "booked") and info.case_id in self.untold:
            kind, by = self.untold[info.case_id]
            word = "silenced" if kind == "silence" else "inhibited"
            return kind, [by], f"over before anyone was told of it ({word} by {by})"
        labels = self.mute_labels(info)
        hit = self.inhibitor.muted_by(info.case_id, labels)
        if hit is not None:
            rule, source = hit
            return "inhibit", [source], f"inhibited by case {source} ({rule.title})"
        silences = self.silences.muting(labels, now)
        if silences:
            ids = [x.id for x in silences]
            return "silence", ids, "silenced by " + ", ".join(ids)
        return None

    def _unmuted(self, notices: list[Notice], now: int) -> list[Notice]:
        """The notices of a due group that may be pushed; the others are recorded as muted."""
        out = []
        for n in notices:
            info = self.cases.get(n.case_id)
            why = self.muted(info, now, n.change) if info is not None else None
            if why is None:
                out.append(n)
                continue
            kind, ids, detail = why
            for by in ids:
                self.store.mark_muted(n, kind, by, now)
                if n.case_id not in self.untold:
                    self.mutes.setdefault((kind, by), set()).add(n.case_id)
            self.stats["muted"] += 1
            self.records.append({
                "id": f"muted:{n.route_id}:{n.receiver}:{n.key}", "message": n.key, "receiver": n.receiver,
                "channel": "", "status": "silenced" if kind == "silence" else "inhibited", "detail": detail,
                "silenced_by": ids if kind == "silence" else [], "inhibited_by": ids[0] if kind == "inhibit" else None,
                "attempts": 0, "title": "", "cases": [{"case_id": n.case_id, "change": n.change}], "at": now,
            })  # fmt: skip
            log.info("case %s: %s to %s not pushed: %s", n.case_id, n.change, n.receiver, detail)
        return out

    def _still_muting(self, kind: str, by: str, now: int) -> bool:
        if kind == "silence":
            s = self.silences.by_id.get(by)
            return s is not None and s.active(now)
        return self.inhibitor.firing(by)

    def _release(self, now: int) -> None:
        """A silence that ended, an inhibiting case that is over: each case it muted that is
        still open and unacknowledged gets one notice saying so (key ``<case>:<change>:<by>``)."""
        for (kind, by), case_ids in list(self.mutes.items()):
            if self._still_muting(kind, by, now):
                continue
            del self.mutes[(kind, by)]
            self.store.drop_mutes(kind, by)
            change = "unsilenced" if kind == "silence" else "uninhibited"
            for cid in sorted(case_ids):
                info = self.cases.get(cid)
                if info is not None and info.ended:
                    self.untold[cid] = (kind, by)
                if info is None or info.ended or info.acknowledged:
                    continue
                self._notify(info, change, f"{cid}:{change}:{by}", now, None, now)

    def tick(self) -> int:
        """Fire due escalations, push due groups into the outbox, start deliveries. Returns messages made."""
        now = self.clock()
        made = 0
        with self.store.transaction():
            if self.mutes:
                self._release(now)
            for cid, due in list(self.booked_due.items()):
                if due <= now and cid in self.cases:
                    self._notify_booked(self.cases[cid], now)
            for cid, due in list(self.esc_due.items()):
                if due > now:
                    continue
                info = self.cases[cid]
                routes = self.config.match(info.labels())
                for step in escalate.due_steps(info, routes, self.config, now):
                    gk = group_key(info.labels(), step.route.group_by)
                    n = Notice(key=step.key, case_id=cid, change=step.change, at=step.due_ms, route_id=step.route.id,
                               receiver=step.receiver, group_key=gk, level_name=step.level_name)  # fmt: skip
                    self._accept(n, step.route.group_wait_ms, step.route.group_interval_ms, now)
                    log.info("case %s: %s to %s", cid, step.change, step.receiver)
                self.store.save_case(info, now)
                self._schedule(info)
            for (_route_id, receiver_name, _gk), due in self.grouper.due(now):
                notices = self._unmuted(due, now)
                if not notices:
                    continue
                receiver = (
                    self.config.receivers.get(receiver_name)
                    or self.config.receivers[self.config.root.receiver]
                )
                key = message_key(receiver.name, (f"{n.route_id}|{n.key}" for n in notices))
                msg = self.renderer.render(
                    key, receiver.name, receiver.name, notices, self.cases, receiver.label
                )  # links: made per case for the receiver's officer (``_ack_link``)
                msg.data["mention"] = self._mentions(receiver.name, notices)
                self.store.enqueue(
                    notices, msg, [(c.type, c.target) for c in receiver.channels], now
                )
                made += 1
        self.stats["messages"] += made
        self.deliverer.pump()
        return made

    def prune(self) -> int:
        """Forget cases that ended more than ``FORGET_AFTER_MS`` ago (by the clock)."""
        before = self.clock() - FORGET_AFTER_MS
        self.silences.forget(before)
        n = self.store.prune(before)
        if n:
            for cid in [
                c
                for c, i in self.cases.items()
                if i.ended and int(i.snapshot.get("at") or 0) < before
            ]:
                if not self.store.db.execute(
                    "SELECT 1 FROM cases WHERE case_id=?", (cid,)
                ).fetchone():
                    del self.cases[cid]
                    self.inhibitor.update(cid, {}, False)
                    self.untold.pop(cid, None)
        return n

    def _pushed(self, row: OutboxRow, result: Result, attempts: int) -> None:
        m = row.message
        self.records.append({
            "id": row.key, "message": m.key, "receiver": row.receiver, "channel": row.channel_type,
            "status": result.status, "detail": result.detail, "attempts": attempts, "title": m.title,
            "cases": [{"case_id": c["case_id"], "change": c["change"]} for c in m.data.get("cases", [])],
            "at": self.clock(),
        })  # fmt: skip

    # ------------------------------------------------------------------ the Kafka loop

    async def run(self, stop: asyncio.Event) -> None:
        from bus.kafka import consumer_for, ensure_topics_for, producer_for, topic_partitions
        from contract.topics import KafkaTopics

        k = self.settings.kafka
        topics = KafkaTopics(k.topic_prefix)
        await ensure_topics_for(k)
        consumer = consumer_for(
            k,
            group_id=f"{k.topic_prefix}.alerts",
            client_id="citywatch-alerts",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=2000,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        producer = producer_for(k, client_id="citywatch-alerts", linger_ms=5)
        watcher: asyncio.Task[None] | None = None
        await consumer.start()
        await producer.start()
        try:
            tps = await topic_partitions(
                consumer, [topics.cases, topics.penalties, topics.silences], or_first=True
            )
            consumer.assign(tps)
            # every silence, every start: the topic is the record several processes agree on
            await consumer.seek_to_beginning(*[tp for tp in tps if tp.topic == topics.silences])
            if self.http_port != -1:
                self.http = AckEndpoint(
                    self.config.ack, self.gate, self.clock,
                    self.store.claim_link, self.store.release_link,
                )  # fmt: skip
                port = await self.http.start(
                    self.http_host or self.config.ack.listen_host,
                    self.config.ack.listen_port if self.http_port is None else self.http_port,
                )
                log.info(
                    "ack endpoint on http://%s:%d/ack",
                    self.http_host or self.config.ack.listen_host,
                    port,
                )
            names = {
                topics.cases: "cases",
                topics.penalties: "penalties",
                topics.silences: "silences",
            }
            watcher = asyncio.create_task(self._watch_broker(stop))
            log.info("alerts service ready: %d routes, %d receivers, outbox %s",
                     len(self.config.routes()), len(self.config.receivers), self.store.counts())  # fmt: skip
            self.tick()
            pruned_at = time.monotonic()
            while not stop.is_set():
                if time.monotonic() - pruned_at > PRUNE_EVERY_S:
                    pruned_at = time.monotonic()
                    self.prune()
                if self.reread:
                    await self._reread(consumer, tps)
                batch = await consumer.getmany(timeout_ms=self.poll_ms)
                if batch:
                    records = [(names[tp.topic], orjson.loads(r.value)) for tp, rs in batch.items() for r in rs
                               if r.value is not None]  # fmt: skip
                    accepted = self.accept(records)
                    await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in batch.items()})
                    if accepted:
                        log.info("accepted %d notices from %d records", accepted, len(records))
                self.tick()
                if self.records:
                    recs, self.records = self.records, []
                    for rec in recs:
                        await producer.send(
                            topics.alerts, orjson.dumps(rec), key=rec["message"].encode()
                        )
        finally:
            if watcher is not None:
                watcher.cancel()
            try:
                await producer.stop()
                await consumer.stop()
            finally:
                await self.close()

    async def _reread(self, consumer: Any, tps: list[Any]) -> None:
        """After a broker restart, take the cases, penalties and silences from their start.

        The positions this consumer holds are offsets of the old log. The worker, started
        afresh on the new broker, books everything again from the restored journal, with fewer
        repeats than the old log had, so an old position in the new log passes case events that
        were never seen (the short fault harness with the broker restart: 188 cases never
        pushed). Read again from 0, each event is one the outbox already knows (not pushed
        twice) or news (docs/decisions/010-durable-journal.md §11).
        """
        self.reread = False
        await consumer.seek_to_beginning(*tps)
        log.warning("alerts: the broker restarted; cases, penalties and silences are read again "
                    "from their start (what was pushed already is not pushed again)")  # fmt: skip

    async def _watch_broker(self, stop: asyncio.Event) -> None:
        """A broker that lost the topics: told in the log and pushed to the operators (``broker_alert``)."""
        from bus.watch import BrokerWatch

        await BrokerWatch(self.settings.kafka, "alerts", on_loss=self.broker_alert, logger=log).run(
            stop
        )

    def operators(self) -> list[str]:
        """Who hears of the pipeline itself failing: the top level of the root route's escalation
        (the city command center in the shipped routing), else the root route's receiver."""
        esc = self.config.escalations.get(self.config.root.escalation or "")
        if esc is not None and esc.levels:
            return [esc.levels[-1].receiver]
        return [self.config.root.receiver]

    def broker_alert(self, loss: Any) -> int:
        """Push "the broker lost citywatch's topics" to ``operators()``; one push per loss.

        Not a case: nothing of the city is wrong, the pipeline is. The push says
        what was lost and what to do; its key is the loss (bootstrap, cluster id,
        instant): the outbox's retries never make it two pushes.
        """
        self.reread = True  # the run loop takes the new log from its start (``_reread``)
        now = self.clock()
        what = loss.describe()
        title = "citywatch: Kafka lost the journal / Kafka 丢失了主题"
        text = (
            f"Kafka at {loss.bootstrap}: {what}. The broker restarted empty; what it held is gone "
            "from it, and until the journal is restored from the archive (`citywatch archive "
            "restore`, or `citywatch services up`, which restores it when the broker lacks it) "
            "open cases and their clocks are not where they were. The topics were recreated."
        )
        made = 0
        with self.store.transaction():
            for name in self.operators():
                receiver = self.config.receivers.get(name)
                if receiver is None:
                    continue
                key = message_key(name, [f"kafka-lost|{loss.bootstrap}|{loss.now}|{loss.at_ms}"])
                msg = Message(key, name, title, f"**{title}**\n\n{text}", text,
                              {"kind": "pipeline", "problem": "kafka_topics_lost",
                               "missing": list(loss.missing), "cluster_id": loss.now})  # fmt: skip
                made += self.store.enqueue(
                    [], msg, [(c.type, c.target) for c in receiver.channels], now
                )
        self.deliverer.pump()
        log.error("alerts: told %s of the broker's loss", ", ".join(self.operators()))
        return made

    async def close(self) -> None:
        """Stop deliveries (unsent rows stay pending in the outbox), the endpoint and the channels."""
        await self.deliverer.close()
        if self.http is not None:
            await self.http.stop()
            self.http = None
        for ch in self.channels.values():
            await ch.close()
        self.store.close()

    def link_officer(
        self, receiver_name: str, device: str, action: str = "ack", district: str = ""
    ) -> str:
        """The directory officer a receiver's link for ``device``'s case is made for, or "".

        The receiver's ``officer`` if the directory knows them, else the first officer (by id)
        of the receiver's first role that has one acting in the device's district (``district``
        when the notice is told for another: a paying district's, decision 015); a claim's
        decision links go to the district's supervisor (else the city's) whoever was pushed
        (docs/officers.md, "Links").
        """
        receiver = self.config.receivers.get(receiver_name)
        if receiver is None:
            return ""
        deciding = action in DECISIONS  # a claim is decided by a supervisor, whoever is pushed
        if receiver.officer and not deciding:
            return receiver.officer if self.directory.get(receiver.officer) else ""
        dev = self.registry.get(device) if self.registry is not None else None
        roles = SUPERVISOR_ROLES if deciding else receiver.roles
        if dev is None or not roles:
            return ""
        for role in roles:  # in the order given: the district's own before the city's
            for oid in sorted(self.directory.officers):
                o = self.directory.officers[oid]
                if role in o.roles and o.covers(district or dev.district):
                    return oid
        return ""

    def _mentions(self, receiver_name: str, notices: Any) -> list[dict[str, str]]:
        """The officers this push's links are made for, with how each channel addresses them."""
        out: dict[str, dict[str, str]] = {}
        for n in notices:
            info = self.cases.get(n.case_id)
            device = str((info.snapshot if info else {}).get("device") or "")
            oid = self.link_officer(receiver_name, device, district=n.district) if device else ""
            if n.refused is not None:  # told to the officer who acted
                oid = str(n.refused.get("officer") or oid)
            o = self.directory.get(oid) if oid else None
            if o is not None and oid not in out:
                out[oid] = {"officer": oid, "name": o.name, "wecom": o.wecom,
                            "dingtalk": o.dingtalk or o.phone, "email": o.email}  # fmt: skip
        return list(out.values())

    def _ack_link(
        self, case_id: str, device: str, action: str, receiver_name: str, district: str = ""
    ) -> str:
        officer = self.link_officer(receiver_name, device, action, district)
        if not officer:
            return ""  # nobody to make it for: the push carries no action link
        return make_link(self.config.ack, case_id, device, action, officer, self.clock())

    async def _publish_audit(self, record: AuditRecord) -> None:
        if self._audit is not None:
            await self._audit(record)
            return
        from alerts.acks import publish_audit

        await publish_audit(self.settings, record)

    async def _submit_action(self, action: OfficerAction) -> None:
        if self._submit is not None:
            await self._submit(action)
            return
        from alerts.acks import submit

        await submit(self.settings, action)


def ack_config(alerts: AlertsSettings, config: RoutingConfig, routes_path: str | Path) -> AckConfig:
    """The ack endpoint's configuration: the routing file's ``ack``, with the ``alerts.*`` settings
    (``CITYWATCH_ALERTS_ACK_SECRET``, ``..._ACK_TOKEN``, ``..._BASE_URL``) winning where set.

    The link key and the bearer tokens are refused below ``MIN_SECRET_BYTES`` wherever they come
    from (the settings check their own); an empty key still works, with a random one per start,
    and a warning, because every link already pushed dies with the next restart. Both are
    registered for redaction: no log line shows them.
    """
    ack = config.ack
    if alerts.base_url:
        ack = replace(ack, base_url=alerts.base_url.rstrip("/"))
    if alerts.ack_token:
        raise ConfigError(
            "CITYWATCH_ALERTS_ACK_TOKEN",
            None,
            "a shared bearer token no longer acts on cases: every officer acts with a personal "
            "token (`citywatch officers token issue ID`, docs/officers.md); unset it",
        )
    if alerts.ack_secret:
        ack = replace(ack, secret=alerts.ack_secret)
    elif _no_secret_in(routes_path, ack):
        log.warning(
            "alerts.ack_secret is not set: ack links are signed with a random key made at this "
            "start, and every link pushed so far stops working when the service restarts; set "
            "CITYWATCH_ALERTS_ACK_SECRET (make one with %s)",
            MAKE_SECRET,
        )
    elif len(ack.secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            config.file,
            None,
            f"ack.secret: {len(ack.secret.encode())} bytes; an HMAC key needs at least "
            f"{MIN_SECRET_BYTES}: make one with {MAKE_SECRET}, and set it as "
            "CITYWATCH_ALERTS_ACK_SECRET rather than in this file",
        )
    register_secret(ack.secret)
    register_secrets(ack.tokens)
    return ack


def _no_secret_in(routes_path: str | Path, loaded: AckConfig) -> bool:
    """Whether the routing file gave no ``ack.secret`` (absent, or empty after ``${...}``).

    alerts/route.py fills an empty one with a fresh random key at every load, so a second load
    of the same file gives another key exactly when the file gave none.
    """
    return load_routes(routes_path).ack.secret != loaded.secret


def build_channels(config: RoutingConfig) -> dict[tuple[str, int], Channel]:
    """Every receiver's channel objects, keyed by (receiver, position); an option a channel
    cannot work with (``OptionError``) is a ``ConfigError`` at the entry's line."""
    out: dict[tuple[str, int], Channel] = {}
    for ri, r in enumerate(config.receivers.values()):
        for i, spec in enumerate(r.channels):
            try:
                out[(r.name, i)] = make_channel(spec, config.delivery.timeout_ms)
            except OptionError as exc:
                raise ConfigError(
                    config.file,
                    spec.line,
                    f"receivers[{ri}] ({r.name}): {spec.type}.{exc.option}: {exc.reason}",
                ) from None
    return out


def _load_registry(settings: Settings) -> Any:
    from registry.devices import load_registry

    path = settings.paths.registry
    if not path or not Path(path).exists():
        return None
    return load_registry(path)


# ---------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--routes", default="config/routes.yaml", help="routing file (default config/routes.yaml)"
    )
    parser.add_argument(
        "--state-dir",
        default=None,
        help="where the outbox file lives (default <paths.state_dir>/alerts)",
    )
    parser.add_argument(
        "--listen",
        default=None,
        metavar="HOST:PORT",
        help="address of the ack endpoint (overrides ack.listen of the routing file)",
    )
    parser.add_argument(
        "--registry", help="device registry file, for map links (overrides settings)"
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    """``citywatch alerts``: run until SIGINT/SIGTERM."""
    import signal

    from foundation.errors import CitywatchError

    if getattr(args, "registry", None):
        settings = settings.replace("paths", registry=args.registry)
    host = port = None
    if args.listen:
        h, _, p = args.listen.rpartition(":")
        if not h or not p.isdigit():
            raise CitywatchError(
                f"--listen {args.listen!r}: expected HOST:PORT, e.g. 127.0.0.1:8787"
            )
        host, port = h, int(p)
    state_dir = args.state_dir or str(Path(settings.paths.state_dir) / "alerts")
    service = AlertsService(settings, args.routes, state_dir, http_host=host, http_port=port)

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await service.run(stop)

    asyncio.run(runner())
    return 0


if __name__ == "__main__":
    import sys

    from foundation.errors import CitywatchError
    from foundation.logs import setup_logging
    from foundation.settings import load_settings

    _parser = argparse.ArgumentParser(prog="python -m alerts.service")
    add_arguments(_parser)
    _args = _parser.parse_args()
    try:
        _settings = load_settings(None)
        setup_logging(_settings.log.level)
        sys.exit(main(_args, _settings))
    except CitywatchError as _exc:
        print(f"citywatch: {_exc}", file=sys.stderr)
        sys.exit(2)
