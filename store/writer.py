"""The InfluxDB writer of every stage: a bounded buffer that pushes back, and a
sender that retries until the server has taken each batch
(docs/decisions/002-influxql-and-v1-write.md; the points: ``store.points``).

``InfluxWriter`` has the two verbs of a Quix-Streams-style sink: ``add`` lines
(awaits when the buffer is full: back-pressure, never a drop) and a background
task that ``write``s batches. A batch stays at the head of the queue until the
server has taken it, so order is kept and nothing is lost while InfluxDB is
down; the caller's Kafka consumer simply stops being fed while ``add`` waits.

Retrying is safe because a point is identified by measurement + tag set +
timestamp: writing the same line twice stores it once. A batch whose response
was lost (timeout, reset) is sent again and lands once.

HTTP outcomes:

=====================  ========================================================
2xx                    written
connection error,      retried with exponential backoff and jitter
timeout, 5xx, 429      (429/503: the server's ``Retry-After`` is honoured)
401, 403, 404          retried too, loudly: wrong token or missing database is
                       an operator's fix, and the data in hand is good
413                    batch split in halves and each sent again
400 "partial write"    InfluxDB 1.x already wrote the good lines; the rejected
                       ones (named in the error) are logged and skipped
other 4xx              the batch is bisected down to the offending line(s),
                       which are logged and skipped (2.x rejects a whole batch
                       on one bad line; resending good lines is harmless)
=====================  ========================================================

Two ways to the server, one buffer and one table of outcomes:

* InfluxDB 1.x (and the v1-compatibility API of 2.x/3.x): aiohttp,
  ``POST {url}/write?db=<database>&precision=ms[&rp=<retention_policy>]``
  (``Authorization: Token`` when a token is set).
* ``token`` and ``org`` both set: the v2 API through influxdb-client's asyncio
  client (``InfluxDBClientAsync``, its ``write_api``), bucket
  ``<database>[/<rp>]`` (2.x's DBRP convention). The client does not retry; its
  ``ApiException`` (``status``, ``body``, ``retry_after`` from the
  ``Retry-After`` header) and aiohttp's connection errors are mapped onto the
  table above, so a 429 or 503 backs off exactly as on the v1 path.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import logging
import random
import re
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from store.errors import InfluxError, server_message
from store.influxql import basic

log = logging.getLogger("citywatch.influx")

PRECISIONS = ("ms", "s", "us", "ns")

__all__ = ["PRECISIONS", "InfluxWriter", "WriterStats"]


@dataclass(frozen=True)
class WriterStats:
    written: int
    """Lines the server accepted (a retried batch counts once)."""
    rejected: int
    """Lines the server refused as malformed / conflicting (logged, skipped)."""
    retries: int
    """Requests that failed and were retried."""
    buffered: int
    """Lines accepted by ``add`` and not yet written (including the batch in flight)."""
    last_error: str | None
    """The last failure, e.g. ``HTTP 503: ...`` or ``ClientConnectorError: ...``; None if none yet."""
    retry_after_s: float
    """How long the writer is waiting before its next attempt (0 when it is not)."""


def _check(name: str, value: Any, ok: bool, expected: str) -> None:
    if not ok:
        raise ValueError(f"Invalid {name!r} argument {value!r}; expected {expected}")


class InfluxWriter:
    """Batching, retrying, back-pressuring line-protocol writer (asyncio).

    Parameters
    ----------
    url:
        InfluxDB base URL, ``http(s)://host:port`` (no path).
    database:
        1.x database; with the v2 API the bucket (2.x's DBRP convention).
    token, org:
        Both set: the v2 write API through ``InfluxDBClientAsync``. Token only:
        the v1 API with ``Authorization: Token`` (2.x v1-compat auth). Neither:
        plain 1.x.
    batch_size:
        Lines per request (default 5000, the batch ``bench/influx_write.py``
        measures with; figures in bench/RESULTS.md).
    flush_interval_s:
        A partial batch is sent at the latest this long after it started filling.
    max_buffer:
        Lines held at most (in flight included). ``add`` waits while full;
        ``try_add`` returns False. Must be at least ``batch_size``.
    retry_initial_s, retry_max_s:
        First backoff and its cap; each failure doubles it, with jitter (the
        actual wait is uniformly in [d/2, d]).
    precision:
        Timestamp unit of the lines: one of ``ms`` (citywatch's), ``s``, ``us``, ``ns``.
    retention_policy:
        Write into this RP instead of the database's default ("" = default).
    request_timeout_s:
        Total time allowed for one request; a timeout is retried like an outage.
    """

    def __init__(
        self,
        url: str,
        database: str,
        token: str = "",
        org: str = "",
        batch_size: int = 5000,
        flush_interval_s: float = 1.0,
        max_buffer: int = 200_000,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
        precision: str = "ms",
        retention_policy: str = "",
        request_timeout_s: float = 30.0,
        username: str = "",
        password: str = "",
    ) -> None:
        parsed = urllib.parse.urlparse(url) if isinstance(url, str) else None
        _check(
            "url",
            url,
            parsed is not None
            and parsed.scheme in ("http", "https")
            and bool(parsed.hostname)
            and parsed.path in ("", "/"),
            "a base URL like 'http://127.0.0.1:8086' (no path)",
        )
        _check(
            "database",
            database,
            isinstance(database, str) and bool(database.strip()),
            "a non-empty name",
        )
        _check("token", token, isinstance(token, str), "a string ('' for none)")
        _check("org", org, isinstance(org, str), "a string ('' for none)")
        if org and not token:
            raise ValueError(
                "Invalid 'org' argument: org is set but token is empty; set both for the v2 API, or neither"
            )
        _check(
            "batch_size",
            batch_size,
            type(batch_size) is int and batch_size > 0,
            "an int > 0, e.g. 5000",
        )
        _check(
            "flush_interval_s",
            flush_interval_s,
            isinstance(flush_interval_s, (int, float)) and flush_interval_s > 0,
            "a number of seconds > 0, e.g. 1.0",
        )
        _check(
            "max_buffer",
            max_buffer,
            type(max_buffer) is int and max_buffer >= batch_size,
            f"an int >= batch_size ({batch_size})",
        )
        _check(
            "retry_initial_s",
            retry_initial_s,
            isinstance(retry_initial_s, (int, float)) and retry_initial_s > 0,
            "a number of seconds > 0, e.g. 0.5",
        )
        _check(
            "retry_max_s",
            retry_max_s,
            isinstance(retry_max_s, (int, float)) and retry_max_s >= retry_initial_s,
            f"a number of seconds >= retry_initial_s ({retry_initial_s})",
        )
        if precision not in PRECISIONS:
            raise ValueError(
                f"Invalid 'precision' argument {precision!r}; valid options: {PRECISIONS}"
            )
        _check(
            "retention_policy",
            retention_policy,
            isinstance(retention_policy, str),
            "a string ('' = default RP)",
        )
        _check(
            "request_timeout_s",
            request_timeout_s,
            isinstance(request_timeout_s, (int, float)) and request_timeout_s > 0,
            "a number of seconds > 0",
        )

        self.url = url.rstrip("/")
        self.database = database
        self.token = token
        self.org = org
        self.batch_size = batch_size
        self.flush_interval_s = float(flush_interval_s)
        self.max_buffer = max_buffer
        self.retry_initial_s = float(retry_initial_s)
        self.retry_max_s = float(retry_max_s)
        self.precision = precision
        self.retention_policy = retention_policy
        self.request_timeout_s = float(request_timeout_s)

        self.api = "v2" if token and org else "v1"
        self.bucket = f"{database}/{retention_policy}" if retention_policy else database
        if self.api == "v2":
            params = {"org": org, "bucket": self.bucket, "precision": precision}
            # where influxdb-client posts (it builds the request; this is for messages)
            self.write_url = f"{self.url}/api/v2/write?{urllib.parse.urlencode(params)}"
        else:
            params = {"db": database, "precision": precision}
            if retention_policy:
                params["rp"] = retention_policy
            self.write_url = f"{self.url}/write?{urllib.parse.urlencode(params)}"
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if token:
            self._headers["Authorization"] = f"Token {token}"
        elif username:
            self._headers["Authorization"] = basic(username, password)

        self._buf: collections.deque[str] = collections.deque()
        self._inflight = 0
        self._accepted = 0  # lines ever accepted by add/try_add
        self._done = 0  # lines written or rejected
        self.written = 0
        self.rejected = 0
        self.retries = 0
        self.last_error: str | None = None
        self._retry_until = 0.0
        self._session: aiohttp.ClientSession | None = None
        self._client: Any = None  # InfluxDBClientAsync (v2)
        self._write_api: Any = None
        self._task: asyncio.Task[None] | None = None
        self._changed: asyncio.Condition | None = None
        self._wake: asyncio.Event | None = None
        self._flush_wanted = 0  # send partial batches until _done reaches this
        self._stopping = False

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the HTTP session (v2: the client) and start the background sender.
        Call once, inside the event loop."""
        if self._task is not None:
            raise InfluxError("InfluxWriter.start() called twice; one writer has one sender")
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        if self.api == "v2":
            from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

            self._client = InfluxDBClientAsync(
                url=self.url,
                token=self.token,
                org=self.org,
                timeout=int(self.request_timeout_s * 1000),  # ms, the whole request
                connection_pool_maxsize=1,  # one request at a time: order is kept
            )
            self._write_api = self._client.write_api()
        else:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.request_timeout_s),
                connector=aiohttp.TCPConnector(limit=1),
            )
        self._task = asyncio.create_task(self._run(), name=f"influx-writer-{self.database}")

    async def stop(self, timeout: float | None = None) -> None:
        """Flush everything, then close. With ``timeout``, give up after that many
        seconds and raise ``InfluxError`` naming how many lines were not written."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except TimeoutError:
            left = self.buffered
            await self._close()
            raise InfluxError(
                f"InfluxDB writer stopped with {left} lines unwritten after {timeout}s "
                f"(last error: {self.last_error}); they are still in Kafka: replay from the committed offsets"
            ) from None
        await self._close()

    async def _close(self) -> None:
        self._stopping = True
        await self._notify()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._client is not None:
            await self._client.close()
            self._client = self._write_api = None

    async def __aenter__(self) -> InfluxWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------ the verbs

    @property
    def buffered(self) -> int:
        return len(self._buf) + self._inflight

    @property
    def stats(self) -> WriterStats:
        return WriterStats(
            written=self.written,
            rejected=self.rejected,
            retries=self.retries,
            buffered=self.buffered,
            last_error=self.last_error,
            retry_after_s=max(0.0, self._retry_until - time.monotonic()),
        )

    def _require_started(self) -> None:
        if self._task is None or self._changed is None:
            raise InfluxError(
                "InfluxWriter is not started; `await writer.start()` (or `async with writer:`) first"
            )
        if self._task.done() and not self._task.cancelled() and self._task.exception() is not None:
            raise InfluxError(f"InfluxWriter's sender died: {self._task.exception()!r}")

    def try_add(self, lines: Iterable[str]) -> bool:
        """Queue all ``lines`` if they fit in the buffer now, else queue none and return False."""
        if self._task is None:
            return False
        items = lines if isinstance(lines, (list, tuple)) else list(lines)
        if self.buffered + len(items) > self.max_buffer:
            return False
        self._push(items)
        return True

    async def add(self, lines: Iterable[str]) -> None:
        """Queue ``lines``; waits (back-pressure) while the buffer is full. Never drops."""
        self._require_started()
        assert self._changed is not None
        items = lines if isinstance(lines, (list, tuple)) else list(lines)
        i = 0
        n = len(items)
        while i < n:
            room = self.max_buffer - self.buffered
            if room <= 0:
                async with self._changed:
                    await self._changed.wait_for(
                        lambda: self.max_buffer - self.buffered > 0 or self._stopping
                    )
                if self._stopping:
                    raise InfluxError("InfluxWriter stopped while add() waited for buffer space")
                continue
            chunk = items[i : i + room] if (i or room < n) else items
            self._push(chunk)
            i += len(chunk)

    def _push(self, items: Sequence[str]) -> None:
        if not items:
            return
        before = len(self._buf)
        self._buf.extend(items)
        self._accepted += len(items)
        assert self._wake is not None
        if len(self._buf) >= self.batch_size and before < self.batch_size:
            self._wake.set()

    async def flush(self) -> None:
        """Wait until every line queued before this call is written (or rejected as malformed)."""
        self._require_started()
        assert self._changed is not None and self._wake is not None
        target = self._accepted
        self._flush_wanted = max(self._flush_wanted, target)
        self._wake.set()
        async with self._changed:
            await self._changed.wait_for(
                lambda: self._done >= target or self._task is None or self._task.done()
            )
        if self._done < target and self._task is not None and self._task.done():
            self._require_started()

    # ------------------------------------------------------------ the sender

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while not self._stopping:
            if len(self._buf) < self.batch_size and not (
                self._flush_wanted > self._done and self._buf
            ):
                # a timer instead of asyncio.wait_for: on 3.11 wait_for can turn a
                # cancellation that races its timeout into TimeoutError
                self._wake.clear()
                timer = loop.call_later(self.flush_interval_s, self._wake.set)
                try:
                    await self._wake.wait()
                finally:
                    timer.cancel()
            if not self._buf:
                continue
            n = min(self.batch_size, len(self._buf))
            batch = [self._buf.popleft() for _ in range(n)]
            self._inflight = n
            try:
                await self._write(batch)
            except asyncio.CancelledError:
                self._buf.extendleft(
                    reversed(batch)
                )  # stop(timeout) gave up: keep the count honest
                raise
            except Exception as exc:  # a bug must not lose the batch or kill the sender
                log.exception("InfluxDB writer: unexpected error; batch kept at the head")
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._buf.extendleft(reversed(batch))
                await asyncio.sleep(self.retry_initial_s)
                continue
            finally:
                self._inflight = 0
            self._done += n
            await self._notify()

    async def _notify(self) -> None:
        if self._changed is None:
            return
        async with self._changed:
            self._changed.notify_all()

    async def _write(self, batch: list[str]) -> None:
        """Send one batch until the server has taken it (or refused lines of it as malformed)."""
        backoff = self.retry_initial_s
        body = ("\n".join(batch) + "\n").encode()
        while True:
            status, text, retry_after = await self._post(body)
            if 200 <= status < 300:
                self.written += len(batch)
                self._retry_until = 0.0
                return
            if status == 413 and len(batch) > 1:
                half = len(batch) // 2
                await self._write(batch[:half])
                await self._write(batch[half:])
                return
            if status == 400 and "partial write" in text:
                dropped = _dropped(text)
                self.rejected += dropped
                self.written += len(batch) - dropped
                self.last_error = f"HTTP 400: {text}"
                log.error(
                    "InfluxDB refused %d of %d lines (the rest were written): %s",
                    dropped,
                    len(batch),
                    text,
                )
                return
            if 400 <= status < 500 and status not in (401, 403, 404, 408, 429):
                if len(batch) > 1:
                    half = len(batch) // 2
                    await self._write(batch[:half])
                    await self._write(batch[half:])
                    return
                self.rejected += 1
                self.last_error = f"HTTP {status}: {text}"
                log.error(
                    "InfluxDB refused a line (HTTP %d: %s); skipped: %r", status, text, batch[0]
                )
                return
            # retryable: connection error (status 0), 5xx, 429, 408, auth, missing database
            self.retries += 1
            self.last_error = f"HTTP {status}: {text}" if status else text
            if retry_after is not None:
                delay = retry_after
            else:
                delay = random.uniform(backoff / 2, backoff)
                backoff = min(backoff * 2, self.retry_max_s)
            level = logging.ERROR if status in (401, 403, 404) else logging.WARNING
            log.log(
                level,
                "InfluxDB write failed (%s); %d lines kept, retrying in %.2fs",
                self.last_error,
                len(batch),
                delay,
            )
            self._retry_until = time.monotonic() + delay
            await asyncio.sleep(delay)

    async def _post(self, body: bytes) -> tuple[int, str, float | None]:
        """(status, error text, Retry-After seconds); status 0 = no HTTP answer."""
        if self._write_api is not None:
            return await self._post_v2(body)
        assert self._session is not None
        try:
            async with self._session.post(self.write_url, data=body, headers=self._headers) as resp:
                if resp.status == 204:
                    return 204, "", None
                text = (await resp.text(errors="replace"))[:2000]
                return (
                    resp.status,
                    server_message(text),
                    _retry_after(resp.headers.get("Retry-After")),
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return 0, f"{type(exc).__name__}: {exc}", None

    async def _post_v2(self, body: bytes) -> tuple[int, str, float | None]:
        """The same answer from influxdb-client's ``WriteApiAsync.write``.

        It returns on 2xx and raises ``ApiException`` (an ``InfluxDBError``) with
        the HTTP ``status``, the ``body`` and ``retry_after`` (the ``Retry-After``
        header) otherwise; connection errors and timeouts come through as aiohttp's.
        """
        from influxdb_client.client.exceptions import InfluxDBError
        from influxdb_client.rest import ApiException

        try:
            await self._write_api.write(
                bucket=self.bucket, org=self.org, record=body, write_precision=self.precision
            )
            return 204, "", None
        except ApiException as exc:
            raw = exc.body
            text = (
                raw.decode(errors="replace")
                if isinstance(raw, bytes)
                else str(raw or exc.reason or "")
            )
            return int(exc.status or 0), server_message(text[:2000]), _retry_after(exc.retry_after)
        except InfluxDBError as exc:  # no HTTP answer to judge
            return 0, f"{type(exc).__name__}: {exc.message}", None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return 0, f"{type(exc).__name__}: {exc}", None


def _dropped(text: str) -> int:
    """Lines InfluxDB 1.x says it dropped; a parse error is reported per line with ``dropped=0``."""
    unparsable = text.count("unable to parse")
    m = re.search(r"dropped=(\d+)", text)
    return unparsable + (int(m.group(1)) if m else 0)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, min(float(value), 3600.0))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, min(when.timestamp() - time.time(), 3600.0))
