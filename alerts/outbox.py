"""The durable stage: a sqlite file (WAL) holding everything the service accepted.

Tables:

* ``cases``    -- latest snapshot, money seen, pushed state and escalation
  progress per case (so a restart neither repeats nor forgets an escalation);
* ``entries``  -- ledger entry ids already counted (a redelivered entry adds nothing);
* ``notices``  -- every notice accepted, keyed by (idempotency key, route,
  receiver): a redelivered case event inserts nothing; ``message_key`` is set
  when the group stage put it into a message;
* ``outbox``   -- one row per (message, channel): ``pending`` until the channel
  said delivered (or the message was given up). On restart only undelivered
  rows are sent again.
* ``silences`` -- the latest version of every silence the service knows (the
  record is ``<prefix>.silences``; alerts/silence.py);
* ``mutes``    -- which cases a silence or an inhibiting case muted a notice of,
  so when the silence ends (or the inhibiting case is over) each of them that
  is still open is told once (docs/alerts.md, "Silences and inhibition"). A
  muted notice keeps its row in ``notices`` with ``message_key``
  ``muted:<by>``: it is never restored as pending.

A push is *accepted* when its notice row is committed; the Kafka offsets of
the records that produced it are committed only after that. Grouping a set of
notices into a message and inserting its outbox rows is one transaction.

``Deliverer`` sends due outbox rows: per target (robot, URL, mailbox) in
order, one at a time; a retry-later result blocks that target until the
row's next attempt (exponential backoff with jitter, or the channel's own
retry-after); other targets are not held up.

The file holds robot URLs with their keys and officers' signed ack links, so it
and its ``-wal``/``-shm`` siblings are readable by citywatch's user alone (0600).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from alerts.channels.plugin import Channel, Result
from alerts.message import CaseInfo, Message, Notice
from alerts.route import DeliveryConfig
from foundation.errors import CitywatchError

log = logging.getLogger("citywatch.alerts.outbox")

PRIVATE = 0o600
SQLITE_SIBLINGS = ("-wal", "-shm", "-journal")
"""The files sqlite keeps beside a database; they hold the same rows."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS cases(case_id TEXT PRIMARY KEY, row BLOB NOT NULL, ended INTEGER NOT NULL DEFAULT 0,
                                 updated_ms INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS entries(id TEXT PRIMARY KEY, case_id TEXT NOT NULL, amount INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS notices(key TEXT NOT NULL, route_id TEXT NOT NULL, receiver TEXT NOT NULL,
                                   body BLOB NOT NULL, created_ms INTEGER NOT NULL, message_key TEXT,
                                   PRIMARY KEY(key, route_id, receiver));
CREATE INDEX IF NOT EXISTS notices_pending ON notices(message_key) WHERE message_key IS NULL;
CREATE TABLE IF NOT EXISTS outbox(id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE,
                                  message_key TEXT NOT NULL, receiver TEXT NOT NULL, channel INTEGER NOT NULL,
                                  channel_type TEXT NOT NULL, target TEXT NOT NULL, message BLOB NOT NULL,
                                  state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
                                  next_ms INTEGER NOT NULL, created_ms INTEGER NOT NULL,
                                  done_ms INTEGER, detail TEXT);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_ms);
CREATE TABLE IF NOT EXISTS silences(id TEXT PRIMARY KEY, body BLOB NOT NULL, ends_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS mutes(case_id TEXT NOT NULL, kind TEXT NOT NULL, muted_by TEXT NOT NULL,
                                 at_ms INTEGER NOT NULL, PRIMARY KEY(case_id, kind, muted_by));
CREATE TABLE IF NOT EXISTS used_links(nonce TEXT PRIMARY KEY, used_ms INTEGER NOT NULL, officer TEXT NOT NULL,
                                      case_id TEXT NOT NULL);
"""


def make_private(path: Path) -> None:
    """Create ``path`` (if absent) and its sqlite siblings (if present) readable by this user alone.

    Created with mode 0600 before sqlite opens it, so no moment exists when another user could
    open it (the umask can only narrow the mode); sqlite gives the ``-wal``, ``-shm`` and
    ``-journal`` files it creates later the database's mode, so they are 0600 too. A file an
    older citywatch made world-readable is narrowed.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE)
        try:
            os.fchmod(fd, PRIVATE)
        finally:
            os.close(fd)
        for suffix in SQLITE_SIBLINGS:
            try:
                os.chmod(path.with_name(path.name + suffix), PRIVATE)
            except FileNotFoundError:
                pass
    except OSError as exc:
        raise CitywatchError(
            f"{path}: cannot make the alerts outbox private (mode 0600): {exc.strerror or exc}; "
            "run the alerts service as the user that owns it, or give it another --state-dir"
        ) from None


def message_key(receiver: str, notice_keys: Iterable[str]) -> str:
    """Deterministic id of a push: the same notices to the same receiver are the same push."""
    h = hashlib.sha256(receiver.encode())
    for k in sorted(notice_keys):
        h.update(b"\n" + k.encode())
    return h.hexdigest()[:24]


@dataclass(frozen=True)
class OutboxRow:
    id: int
    key: str
    receiver: str
    channel: int
    channel_type: str
    target: str
    message: Message
    attempts: int
    created_ms: int


class Store:
    """The sqlite file. All methods are synchronous and quick (WAL, synchronous=NORMAL:
    a commit survives a crash of the process; only a power cut can lose the last ones)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        make_private(self.path)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self._depth = 0

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")
        finally:
            self._depth = 0

    # ------------------------------------------------------------------ cases and entries

    def load_cases(self) -> dict[str, CaseInfo]:
        out = {}
        for case_id, row in self.db.execute("SELECT case_id, row FROM cases"):
            out[case_id] = CaseInfo.from_row(case_id, orjson.loads(row))
        return out

    def save_case(self, info: CaseInfo, now_ms: int) -> None:
        self.db.execute(
            "INSERT INTO cases(case_id, row, ended, updated_ms) VALUES(?,?,?,?) "
            "ON CONFLICT(case_id) DO UPDATE SET row=excluded.row, ended=excluded.ended, updated_ms=excluded.updated_ms",
            (info.case_id, orjson.dumps(info.to_row()), int(info.ended), now_ms),
        )

    def prune(self, before_ms: int) -> int:
        """Forget what is over: ended cases untouched since ``before_ms``, their money, their grouped
        notices and finished outbox rows. Returns the cases forgotten."""
        ids = [r[0] for r in self.db.execute("SELECT case_id FROM cases WHERE ended=1 AND updated_ms < ?",
                                             (before_ms,))]  # fmt: skip
        with self.transaction():
            for cid in ids:
                self.db.execute("DELETE FROM cases WHERE case_id=?", (cid,))
                self.db.execute("DELETE FROM entries WHERE case_id=?", (cid,))
            self.db.execute(
                "DELETE FROM notices WHERE message_key IS NOT NULL AND created_ms < ?", (before_ms,)
            )
            self.db.execute(
                "DELETE FROM outbox WHERE state != 'pending' AND created_ms < ?", (before_ms,)
            )
            # a link older than this has long expired: its use need not be remembered
            self.db.execute("DELETE FROM used_links WHERE used_ms < ?", (before_ms,))
            self.db.execute("DELETE FROM silences WHERE ends_ms < ?", (before_ms,))
            self.db.execute("DELETE FROM mutes WHERE case_id NOT IN (SELECT case_id FROM cases)")
        return len(ids)

    # ------------------------------------------------------------------ silences and mutes

    def save_silence(self, silence: dict[str, Any]) -> None:
        """Keep a silence's version (``Silence.to_dict()``); the caller decided it is the newest."""
        self.db.execute(
            "INSERT INTO silences(id, body, ends_ms) VALUES(?,?,?) "
            "ON CONFLICT(id) DO UPDATE SET body=excluded.body, ends_ms=excluded.ends_ms",
            (silence["id"], orjson.dumps(silence), int(silence["ends_at"])),
        )

    def load_silences(self) -> list[dict[str, Any]]:
        return [
            orjson.loads(b) for (b,) in self.db.execute("SELECT body FROM silences ORDER BY id")
        ]

    def mark_muted(self, n: Notice, kind: str, by: str, now_ms: int) -> None:
        """The notice was muted (``kind`` silence|inhibit, ``by`` the silence / source case id):
        done, never pushed or restored; the case is remembered as muted by ``by``."""
        self.db.execute("UPDATE notices SET message_key=? WHERE key=? AND route_id=? AND receiver=?",
                        (f"muted:{by}", n.key, n.route_id, n.receiver))  # fmt: skip
        self.db.execute(
            "INSERT OR IGNORE INTO mutes(case_id, kind, muted_by, at_ms) VALUES(?,?,?,?)",
            (n.case_id, kind, by, now_ms),
        )

    def load_mutes(self) -> dict[tuple[str, str], set[str]]:
        """(kind, muted_by) -> the case ids it muted."""
        out: dict[tuple[str, str], set[str]] = {}
        for case_id, kind, by in self.db.execute("SELECT case_id, kind, muted_by FROM mutes"):
            out.setdefault((kind, by), set()).add(case_id)
        return out

    def drop_mutes(self, kind: str, by: str) -> None:
        self.db.execute("DELETE FROM mutes WHERE kind=? AND muted_by=?", (kind, by))

    def claim_link(self, nonce: str, officer: str, case_id: str, now_ms: int) -> bool:
        """Take a signed link's single use; False when it was used already (docs/officers.md)."""
        with self.transaction():
            cur = self.db.execute(
                "INSERT OR IGNORE INTO used_links(nonce, used_ms, officer, case_id) VALUES(?,?,?,?)",
                (nonce, now_ms, officer, case_id),
            )
        return cur.rowcount == 1

    def release_link(self, nonce: str) -> None:
        """Give a link its use back: the act it carried was not recorded (refused, Kafka down)."""
        with self.transaction():
            self.db.execute("DELETE FROM used_links WHERE nonce=?", (nonce,))

    def add_entry(self, entry_id: str, case_id: str, amount: int) -> bool:
        """Count a ledger entry once; False if it was already counted."""
        cur = self.db.execute("INSERT OR IGNORE INTO entries(id, case_id, amount) VALUES(?,?,?)",
                              (entry_id, case_id, amount))  # fmt: skip
        return cur.rowcount == 1

    # ------------------------------------------------------------------ notices

    def add_notice(self, n: Notice, now_ms: int) -> bool:
        """Accept a notice once; False if this key already went (or is going) to this receiver."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO notices(key, route_id, receiver, body, created_ms) VALUES(?,?,?,?,?)",
            (n.key, n.route_id, n.receiver, orjson.dumps(n.to_dict()), now_ms),
        )
        return cur.rowcount == 1

    def withdraw_notices(self, key: str, why: str) -> bool:
        """Mark the notices of ``key`` done without a push (``message_key`` ``why``) if none of
        them went into a push yet; False (and nothing changed) if one did."""
        with self.transaction():
            sent = self.db.execute(
                "SELECT 1 FROM notices WHERE key=? AND message_key IS NOT NULL", (key,)
            ).fetchone()
            if sent:
                return False
            self.db.execute(
                "UPDATE notices SET message_key=? WHERE key=? AND message_key IS NULL", (why, key)
            )
        return True

    def pending_notices(self) -> list[tuple[Notice, int]]:
        return [
            (Notice.from_dict(orjson.loads(body)), created)
            for body, created in self.db.execute(
                "SELECT body, created_ms FROM notices WHERE message_key IS NULL ORDER BY rowid")
        ]  # fmt: skip

    # ------------------------------------------------------------------ the outbox

    def enqueue(
        self, notices: list[Notice], message: Message, channels: list[tuple[str, str]], now_ms: int
    ) -> int:
        """In one transaction: mark the notices as sent in ``message`` and add one outbox row per channel
        (``channels``: (type, target) in receiver order). Returns the rows added."""
        body = orjson.dumps(message.to_dict())
        added = 0
        with self.transaction():
            for n in notices:
                self.db.execute("UPDATE notices SET message_key=? WHERE key=? AND route_id=? AND receiver=?",
                                (message.key, n.key, n.route_id, n.receiver))  # fmt: skip
            for i, (ctype, target) in enumerate(channels):
                cur = self.db.execute(
                    "INSERT OR IGNORE INTO outbox(key, message_key, receiver, channel, channel_type, target, message,"
                    " state, attempts, next_ms, created_ms) VALUES(?,?,?,?,?,?,?,'pending',0,?,?)",
                    (
                        f"{message.key}#{i}",
                        message.key,
                        message.receiver,
                        i,
                        ctype,
                        target,
                        body,
                        now_ms,
                        now_ms,
                    ),
                )
                added += cur.rowcount
        return added

    def due(self, now_ms: int, limit: int = 500) -> list[OutboxRow]:
        rows = self.db.execute(
            "SELECT id, key, receiver, channel, channel_type, target, message, attempts, created_ms FROM outbox"
            " WHERE state='pending' AND next_ms <= ? ORDER BY id LIMIT ?", (now_ms, limit)).fetchall()  # fmt: skip
        return [OutboxRow(r[0], r[1], r[2], r[3], r[4], r[5], Message.from_dict(orjson.loads(r[6])), r[7], r[8])
                for r in rows]  # fmt: skip

    def next_due_ms(self) -> int | None:
        row = self.db.execute("SELECT MIN(next_ms) FROM outbox WHERE state='pending'").fetchone()
        return row[0]

    def mark(
        self, row_id: int, state: str, attempts: int, next_ms: int, now_ms: int, detail: str
    ) -> None:
        self.db.execute(
            "UPDATE outbox SET state=?, attempts=?, next_ms=?, done_ms=?, detail=? WHERE id=?",
            (
                state,
                attempts,
                next_ms,
                now_ms if state != "pending" else None,
                detail[:500],
                row_id,
            ),
        )

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall())

    def rows(self) -> list[dict[str, Any]]:
        cols = ("id", "key", "receiver", "channel_type", "state", "attempts", "detail")
        return [
            dict(zip(cols, r, strict=True))
            for r in self.db.execute(f"SELECT {', '.join(cols)} FROM outbox ORDER BY id")
        ]


class Deliverer:
    """Sends due outbox rows through their channels; retries with backoff and jitter."""

    def __init__(
        self,
        store: Store,
        channels: dict[tuple[str, int], Channel],
        config: DeliveryConfig,
        clock: Callable[[], int],
        on_done: Callable[[OutboxRow, Result, int], Any] | None = None,
    ):
        self.store = store
        self.channels = channels
        self.config = config
        self.clock = clock
        self.on_done = on_done
        self.busy: dict[str, asyncio.Task[None]] = {}
        self.blocked_until: dict[str, int] = {}
        self.wake = asyncio.Event()

    def backoff_ms(self, attempts: int) -> int:
        base = min(
            self.config.retry_max_ms, self.config.retry_initial_ms * (2 ** max(0, attempts - 1))
        )
        return int(base * (0.5 + random.random() / 2))  # "equal jitter": between half and all of it

    def pump(self) -> None:
        """Start a drain task for every target that has due rows and is not busy or blocked."""
        now = self.clock()
        by_target: dict[str, list[OutboxRow]] = {}
        for row in self.store.due(now):
            if row.target in self.busy or self.blocked_until.get(row.target, 0) > now:
                continue
            by_target.setdefault(row.target, []).append(row)
        for target, rows in by_target.items():
            self.busy[target] = asyncio.get_running_loop().create_task(self._drain(target, rows))

    async def _drain(self, target: str, rows: list[OutboxRow]) -> None:
        try:
            for row in rows:
                if not await self._send(row):
                    break
        finally:
            self.busy.pop(target, None)
            self.wake.set()

    async def _send(self, row: OutboxRow) -> bool:
        """Send one row; True to go on with the target's next row."""
        channel = self.channels.get((row.receiver, row.channel))
        attempts = row.attempts + 1
        if channel is None:
            result = Result.give_up(
                f"receiver {row.receiver!r} channel {row.channel} is no longer configured"
            )
        else:
            try:
                result = await asyncio.wait_for(
                    channel.send(row.message), self.config.timeout_ms / 1000 * 2 + 5
                )
            except Exception as exc:  # noqa: BLE001 - a channel bug or timeout: try again later
                result = Result.retry(f"{type(exc).__name__}: {exc}")
        now = self.clock()
        if result.status == "delivered":
            self.store.mark(row.id, "delivered", attempts, now, now, result.detail)
            log.info(
                "delivered %s via %s to %s (attempt %d)",
                row.key,
                row.channel_type,
                row.receiver,
                attempts,
            )
        elif result.status == "retry" and now - row.created_ms < self.config.give_up_after_ms:
            wait = (
                int(result.retry_after_s * 1000)
                if result.retry_after_s is not None
                else self.backoff_ms(attempts)
            )
            self.store.mark(row.id, "pending", attempts, now + wait, now, result.detail)
            self.blocked_until[row.target] = now + wait
            log.warning("%s via %s: retry in %.1fs (attempt %d): %s", row.key, row.channel_type, wait / 1000,
                        attempts, result.detail)  # fmt: skip
            return False
        else:
            self.store.mark(row.id, "given_up", attempts, now, now, result.detail)
            log.error("gave up %s via %s to %s after %d attempts: %s", row.key, row.channel_type, row.receiver,
                      attempts, result.detail)  # fmt: skip
        if self.on_done is not None:
            try:
                self.on_done(row, result, attempts)
            except Exception:  # noqa: BLE001
                log.exception("on_done callback failed")
        return True

    async def close(self) -> None:
        for t in list(self.busy.values()):
            t.cancel()
        for t in list(self.busy.values()):
            try:
                await t
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
