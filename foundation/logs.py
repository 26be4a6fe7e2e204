"""Logging set-up shared by every process citywatch starts (CLI, bridge, worker, alerts).

One place, so a process started on its own (``python -m alerts.service``) logs
exactly as one started by the CLI, and so the libraries that build a debug
record per event are held at warning everywhere (docs/architecture.md).

It is also the one place where secrets are kept out of the log. A log line is
read by more people than a settings file (it is mailed, pasted into tickets,
kept for months), so ``setup_logging`` makes every record redacted at the
moment it is made, whoever logs it and whichever handler writes it:

* a password in a URL: ``mqtt://user:secret@host`` -> ``mqtt://user:***@host``;
* secret query parameters and headers: a WeCom robot's ``key=``, DingTalk's
  ``access_token=`` and ``sign=``, an ack link's ``sig=``, ``token=``,
  ``password=``, ``Authorization: Bearer ...``;
* every value registered with ``register_secret`` (the settings register their
  passwords and tokens, the alerts service its robot URLs, HMAC keys and
  bearer tokens), also percent-encoded, wherever it appears.

``redact`` is the same function for text that is not a log line but leaves
the process (a channel's delivery detail, the ``<prefix>.alerts`` records).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit

QUIET_LOGGERS = ("aiokafka", "faust", "mode", "kafka", "aiohttp.access")
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

MASK = "***"
MIN_SECRET_CHARS = 8
"""Registered values shorter than this are not masked by value: masking every ``admin`` or
``1234`` in every line would blank ordinary words and numbers. The patterns still mask such a
password where it stands in a URL or a ``password=`` parameter, and the secrets citywatch
chooses (HMAC keys, bearer tokens) are refused below 32 bytes (foundation/settings.py)."""

SECRET_PARAMS = (
    "key",  # WeCom robot
    "access_token",  # DingTalk robot
    "sign",  # DingTalk signature
    "sig",  # citywatch ack links
    "signature",
    "token",
    "api_key",
    "apikey",
    "secret",
    "password",
    "passwd",
    "pwd",
)
"""Query parameters (``name=value``) whose value is a credential wherever they appear."""

_USERINFO = re.compile(
    # scheme://user:password@host -- the password is everything after the first ':' up to the
    # last '@' of the word: a password may hold '@' or an unencoded '/'. When in doubt more is
    # masked (a later '@' in the path), never less.
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:]*:)[^\s'\"<>]*(?=@[^\s'\"<>@]*)"
)
_PARAM = re.compile(
    r"(?<![\w.-])(?P<name>" + "|".join(SECRET_PARAMS) + r")=(?P<value>[^&\s#'\"<>]+)",
    re.IGNORECASE,
)
_AUTH = re.compile(
    # an Authorization header as a library prints it, or a bearer token quoted alone (long enough
    # not to be a word: "invalid bearer token" stays readable)
    r"(?P<head>\bAuthorization['\"]?\s*[:=]\s*['\"]?(?:Bearer|Basic|Token)\s+|\bBearer\s+(?=[A-Za-z0-9._~+/=-]{16}))"
    r"[A-Za-z0-9._~+/=-]+",
    re.IGNORECASE,
)

_lock = threading.Lock()
_known: set[str] = set()
_known_re: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Mask ``value`` in every log line and every redacted text of this process from now on.

    A URL is a secret as a whole (a robot's webhook address) and its parts are too: its
    password and every query value are registered with it, so the key is masked also where
    a library logs the URL rebuilt or re-encoded.
    """
    global _known_re
    if not value:
        return
    forms = {value}
    if "://" in value:
        try:
            parts = urlsplit(value)
            forms.add(parts.password or "")
            # the values of credential parameters, and any token-like one (an unknown robot's
            # ``auth=...``), not ordinary ones such as ``type=markdown``
            forms.update(v for k, v in parse_qsl(parts.query)
                         if k.lower() in SECRET_PARAMS or (len(v) >= 16 and " " not in v))  # fmt: skip
        except ValueError:  # not a URL after all: the value alone
            pass
    forms |= {quote(f, safe="") for f in forms} | {quote_plus(f, safe="") for f in forms}
    forms = {f for f in forms if len(f) >= MIN_SECRET_CHARS}
    with _lock:
        if forms <= _known:
            return
        _known.update(forms)
        # Longest first, so a URL is masked whole before its key is masked inside it.
        alternatives = sorted(_known, key=len, reverse=True)
        _known_re = re.compile("|".join(re.escape(f) for f in alternatives))


def register_secrets(values: Iterable[str | None]) -> None:
    for v in values:
        register_secret(v)


def redact(text: str) -> str:
    """``text`` with every registered secret and every credential-shaped part masked."""
    if not text:
        return text
    known = _known_re
    if known is not None:
        text = known.sub(MASK, text)
    if "://" in text:
        text = _USERINFO.sub(lambda m: m.group("head") + MASK, text)
    if "=" in text:
        text = _PARAM.sub(lambda m: f"{m.group('name')}={MASK}", text)
    return _AUTH.sub(lambda m: m.group("head") + MASK, text)


# ---------------------------------------------------------------------- the hooks into logging

_plain = logging.Formatter()


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact a record in place: its message (arguments merged in), traceback and stack.

    Done when the record is made rather than when a handler writes it, so every handler sees
    the redacted record: ours, pytest's ``caplog``, and the ones Faust installs for the worker.
    """
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string: the handler reports it, as logging does
        return record
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and not record.exc_text:
        text = _plain.formatException(record.exc_info)
        clean = redact(text)
        if clean != text:
            record.exc_text = clean  # every logging.Formatter uses this instead of formatting anew
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


class RedactingFormatter(logging.Formatter):
    """Redacts the finished line too: what a record factory cannot see (records rebuilt with
    ``logging.makeLogRecord`` from a queue or a socket, text a subclass adds when formatting)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def install_redaction() -> Callable[[], None]:
    """Make every log record redacted when it is made, and uncaught exceptions redacted on
    stderr; idempotent. Returns a function that puts back what was there (for tests)."""
    old_factory = logging.getLogRecordFactory()
    old_hook, old_thread_hook = sys.excepthook, threading.excepthook
    if getattr(old_factory, "redacting", False):
        return lambda: None

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(old_factory(*args, **kwargs))

    factory.redacting = True  # type: ignore[attr-defined]

    def excepthook(
        kind: type[BaseException], value: BaseException, tb: TracebackType | None
    ) -> None:
        sys.stderr.write(redact("".join(traceback.format_exception(kind, value, tb))))

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:  # as threading's own hook: a thread may exit that way
            return
        name = args.thread.name if args.thread is not None else "?"
        text = "".join(
            traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)
        )
        sys.stderr.write(redact(f"Exception in thread {name}:\n{text}"))

    logging.setLogRecordFactory(factory)
    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook

    def undo() -> None:
        logging.setLogRecordFactory(old_factory)
        sys.excepthook, threading.excepthook = old_hook, old_thread_hook

    return undo


def setup_logging(level: str) -> None:
    """Log to stderr at ``level``, redacted (see the module doc); libraries held at warning."""
    install_redaction()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(FORMAT))
    logging.basicConfig(level=getattr(logging, level), handlers=[handler])
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, getattr(logging, level)))
