"""Structured logs (SPEC section 6): JSON lines on stderr, or text for humans.

Two loggers carry the product's records: ``authproxy.access`` (one line per request) and
``authproxy.auth`` (login, refresh, logout events). Fields travel in ``extra={"fields": {...}}``.

Redaction happens in the formatters, so it covers every record whoever logged it (our modules,
aiohttp, redis-py, asyncio, warnings) and a careless message cannot leak a secret:

- a field whose *name* says credential (``refresh_token``, ``client_secret``, ``cookie``,
  ``code``, ``state``, ``authorization`` ...) is replaced whatever its value looks like;
- every string that reaches the output (message, field values of any type, exception text,
  stack) is scrubbed of anything *shaped* like a credential: JWS/JWE compact serialisations
  (RFC 7515 section 7.1, RFC 7516 section 7.1: ID, access and logout tokens), ``Bearer`` and
  ``Basic`` credentials (RFC 6750 section 2.1, RFC 7617), OAuth parameters in query strings,
  form bodies, JSON and Python reprs (RFC 6749 sections 4.1.2 and 5.1, RFC 7636 section 4.5),
  ``Cookie``/``Set-Cookie`` header values, authproxy's own cookie tickets, and the password of a
  URL's userinfo (RFC 3986 section 3.2.1, e.g. ``redis://:password@host``).

Logging is configured once, by the CLI; it also routes Python warnings and uncaught exceptions
through the same handler, so stderr stays one JSON object per line.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from json.encoder import encode_basestring_ascii
from types import TracebackType
from typing import Any, Final

from authproxy.headers import MAX_IDENTITY_FIELD

ACCESS: Final = logging.getLogger("authproxy.access")
AUTH: Final = logging.getLogger("authproxy.auth")
LOG: Final = logging.getLogger("authproxy")

REDACTED: Final = "[redacted]"
LOG_FORMATS: Final = ("json", "text")
# keys every JSON line starts with; a record's fields may not overwrite them
_BASE_KEYS: Final = frozenset({"time", "level", "logger", "msg"})
# a field value nested deeper than this is cut off: a self-referencing structure must not hang a log call
_MAX_DEPTH: Final = 8

# Field names that hold credentials whatever their value looks like (compared lower-cased, with
# "-" read as "_", so header names such as X-Auth-Request-Access-Token are caught too).
_SECRET_NAMES: Final = frozenset(
    {
        "code", "state", "session_state", "nonce", "token", "verifier", "code_verifier", "id_token_hint",
        "client_assertion", "assertion", "secret", "secrets", "password", "passwd", "cookie", "cookies",
        "set_cookie", "authorization", "proxy_authorization", "ticket", "api_key", "apikey", "private_key",
    }
)  # fmt: skip
_SECRET_SUFFIXES: Final = ("_token", "_secret", "_secrets", "_password", "_cookie", "_verifier", "_assertion")

# Parameter names whose value is scrubbed from free text (``name=value``, ``"name": "value"``,
# ``'name': 'value'``, ``name%3Dvalue``): the OAuth/OIDC parameters plus anything *_token/_secret.
_PARAM_NAMES: Final = (
    r"code|state|session_state|code_verifier|id_token_hint|client_assertion|password|passwd|secret|"
    r"ticket|api[_-]?key|(?:[a-z0-9]++[_-])*+(?:token|secret|password|verifier)"
)
# Every pattern runs over attacker-influenced text (request paths, provider answers) on every log
# line, so none may backtrack more than linearly: runs are matched possessively (``++``, Python
# 3.11) and anchored where a credential can start, and open-ended parts are bounded.
_B64URL_START: Final = r"(?<![A-Za-z0-9_-])"
# the password in a URL's userinfo: scheme://user:password@host (schemes are short; userinfo is
# bounded so that a long run of colons cannot make this quadratic)
_URL_PASSWORD: Final = re.compile(r"(?i)(?<![a-z0-9+.-])([a-z][a-z0-9+.-]{0,31}://[^/\s:@]{0,256}):[^/\s@]{1,256}@")
_URL_PASSWORD_REPLACEMENT: Final = r"\1:" + REDACTED + "@"
_REDACTIONS: Final = (
    # JWS/JWE compact serialisations (ID, access, logout tokens): a base64url JSON header "eyJ"
    (re.compile(_B64URL_START + r"eyJ[A-Za-z0-9_-]{4,}+(?:\.[A-Za-z0-9_-]*+){1,4}"), "[redacted-jwt]"),
    # whole header lines that carry credentials, before the finer patterns cut them into pieces
    (
        re.compile(r"(?i)\b((?:proxy-)?authorization|cookie|set-cookie)(['\"]?\s*[:=]\s*['\"]?)[^\n'\"]++"),
        r"\1\2" + REDACTED,
    ),
    (
        re.compile(
            # a name starts a word, or follows an encoded "?" or "&" (a URL inside a parameter)
            r"(?i)(?:(?<![A-Za-z0-9_-])|(?<=%3F)|(?<=%26))(" + _PARAM_NAMES + r")"
            r"((?:['\"]?\s*[:=]\s*['\"]?)|%3D|%253D)(?!\[redacted)[^&\s\"',;)}\]]++"
        ),
        r"\1\2" + REDACTED,
    ),
    # after the parameters: "Bearer code_verifier: x" must lose x, not just the name before it
    (re.compile(r"(?i)\b(bearer|basic)(\s++)[A-Za-z0-9._~+/=-]++"), r"\1\2" + REDACTED),
    # authproxy's cookie tickets (session and login flow): "v1." + 107 base64url characters
    (re.compile(_B64URL_START + r"v1\.[A-Za-z0-9_-]{40,}+(?:\.[A-Za-z0-9_-]++)?"), "[redacted-ticket]"),
    # the password in a URL's userinfo
    (_URL_PASSWORD, _URL_PASSWORD_REPLACEMENT),
)


# Every pattern above needs one of these to match at all (a JWT's "eyJ", a ":"/"=" or encoded "="
# after a name, a header or scheme word, a ticket's "v1."). Most log text (paths, ids, routes,
# IPv4 addresses) holds none of them, and one scan for all is far cheaper than six.
_MAY_HOLD_CREDENTIAL: Final = re.compile(r"(?i)eyj|[:=]|%3d|%253d|bearer|basic|v1\.")


def may_hold_credential(text: str) -> bool:
    """Whether any redaction pattern could match ``text`` (False: it certainly holds none).

    ``_MAY_HOLD_CREDENTIAL``'s answer, for ASCII text by substring checks: a case-insensitive
    alternation costs the regex engine every branch at every position. Outside ASCII, ``(?i)``
    also folds letters such as U+017F (long s) onto these words, so such text goes to the regex.
    """
    if not text.isascii():
        return _MAY_HOLD_CREDENTIAL.search(text) is not None
    if ":" in text or "=" in text:
        return True
    lowered = text.lower()
    return (
        "eyj" in lowered
        or "%3d" in lowered
        or "%253d" in lowered
        or "bearer" in lowered
        or "basic" in lowered
        or "v1." in lowered
    )


def redact(text: str) -> str:
    """``text`` with anything shaped like a credential replaced."""
    if not may_hold_credential(text):
        return text
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def without_url_passwords(text: str) -> str:
    """``text`` with the password of every URL's userinfo replaced (``redis://:[redacted]@host``)."""
    return _URL_PASSWORD.sub(_URL_PASSWORD_REPLACEMENT, text) if "@" in text else text


@functools.lru_cache(maxsize=1024)
def is_secret_name(name: str) -> bool:
    """Whether a field or parameter called ``name`` holds a credential."""
    normalized = name.strip().lower().replace("-", "_")
    return normalized in _SECRET_NAMES or normalized.endswith(_SECRET_SUFFIXES)


def redact_value(value: Any, depth: int = 0) -> Any:
    """A JSON-ready copy of ``value`` with credentials removed, by field name and by shape.

    Values of other types are rendered with ``str`` first and then scrubbed: ``json.dumps``'s
    ``default=str`` would otherwise print them after redaction had looked the other way.
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= _MAX_DEPTH:
        return "[too deep]"
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bytes | bytearray):
        return redact(bytes(value).decode("utf-8", errors="replace"))
    if isinstance(value, Mapping):
        return _redact_mapping(value, depth)
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v, depth + 1) for v in value]
    return redact(str(value))


_PLAIN_TYPES: Final = frozenset({int, float, bool, type(None)})


def _is_plainly_clean(fields: Mapping[Any, Any]) -> bool:
    """No field is named like a secret, all are flat, and no text could hold a credential.

    One scan over all the texts joined, instead of one per text: a pattern that matches one of
    them matches the joined string too (a match across a join only costs the slow path).
    """
    texts = []
    for k, v in fields.items():
        if type(k) is not str or is_secret_name(k):
            return False
        if type(v) is str:
            texts.append(v)
        elif type(v) not in _PLAIN_TYPES:
            return False
    return not may_hold_credential("\x00".join(texts))


def _redact_mapping(fields: Mapping[Any, Any], depth: int) -> dict[str, Any]:
    if _is_plainly_clean(fields):
        return dict(fields)
    out: dict[str, Any] = {}
    for k, v in fields.items():
        key = k if type(k) is str else str(k)
        kind = type(v)
        # the common field types first: this runs for every field of every access log line
        if v is None:
            out[key] = None
        elif is_secret_name(key):
            out[key] = REDACTED
        elif kind is int or kind is float or kind is bool:
            out[key] = v
        elif kind is str:
            out[key] = redact(v)
        else:
            out[key] = redact_value(v, depth + 1)
    return out


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's ``fields`` (``extra={"fields": ...}``), redacted; empty when there are none."""
    fields = getattr(record, "fields", None)
    return _redact_mapping(fields, 0) if isinstance(fields, Mapping) else {}


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    parts = []
    if record.exc_info:
        parts.append(formatter.formatException(record.exc_info))
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    return redact("\n".join(parts)) if parts else None


# ensure_ascii: a line stays one line and one JSON object whatever bytes a value held. Built once:
# json.dumps with any option builds a new encoder per call.
_JSON_ENCODER: Final = json.JSONEncoder(default=lambda v: redact(str(v)), separators=(",", ":"), ensure_ascii=True)


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    # records come many to a second: format each second once
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields = record_fields(record)
        error = _exception_text(self, record)
        if error is not None:
            fields["\x00error"] = error
        return json_line(record.created, record.levelname.lower(), record.name, redact(record.getMessage()), fields)


def json_line(created: float, level: str, logger: str, msg: str, fields: Mapping[str, Any]) -> str:
    """One JSON log line from already-redacted parts (``\\x00error`` becomes ``error``)."""
    members = _flat_members(fields, unredacted=False)
    if members is not None:
        return _line_start(created, level, logger, msg) + members + "}"
    entry: dict[str, Any] = {
        "time": _utc_second(int(created)) + f".{int((created - int(created)) * 1000):03d}Z",
        "level": level,
        "logger": logger,
        "msg": msg,
    }
    for key, value in fields.items():
        if key == "\x00error":
            entry["error"] = value
        else:
            # a field called "msg" or "time" must not hide the real ones
            entry[f"field_{key}" if key in _BASE_KEYS else key] = value
    return _JSON_ENCODER.encode(entry)


_json_text: Final = encode_basestring_ascii
_NOT_FLAT_KEYS: Final = _BASE_KEYS | {"\x00error"}
_MEMBER_STARTS_MAX: Final = 1024
# ',"key":' by key, for keys a line may carry as they are (strings needing no renaming); the
# second map only holds keys not named like a secret, which unredacted fields may use
_MEMBER_STARTS: dict[str, str] = {}
_CLEAN_MEMBER_STARTS: dict[str, str] = {}


def _member_start(key: object, *, clean: bool) -> str | None:
    if type(key) is not str or key in _NOT_FLAT_KEYS or (clean and is_secret_name(key)):
        return None
    known = _CLEAN_MEMBER_STARTS if clean else _MEMBER_STARTS
    if len(known) >= _MEMBER_STARTS_MAX:
        known.clear()
    start = known[key] = "," + _json_text(key) + ":"
    return start


def _flat_members(fields: Mapping[Any, Any], *, unredacted: bool) -> str | None:
    """The fields as ``_JSON_ENCODER`` writes them inside the line's object, or None if not flat.

    Flat: a string key needing no renaming, and a value of exactly ``str``, ``int``, ``bool``,
    ``None`` or a finite ``float``, each spelt as the encoder spells it (``encode_basestring_ascii``,
    ``int.__repr__``, ``float.__repr__``). Anything else is left to the encoder. ``unredacted``
    fields must also pass :func:`_is_plainly_clean`'s test (then redaction would change nothing).
    """
    starts = _CLEAN_MEMBER_STARTS if unredacted else _MEMBER_STARTS
    parts: list[str] = []
    texts: list[str] = []
    for key, value in fields.items():
        start = starts.get(key)
        if start is None:
            start = _member_start(key, clean=unredacted)
            if start is None:
                return None
        kind = type(value)
        if kind is str:
            texts.append(value)
            text = _json_text(value)
        elif kind is int:
            text = int.__repr__(value)
        elif value is None:
            text = "null"
        elif kind is float:
            if not math.isfinite(value):
                return None
            text = float.__repr__(value)
        elif kind is bool:
            text = "true" if value else "false"
        else:
            return None
        parts.append(start)
        parts.append(text)
    if unredacted and may_hold_credential("\x00".join(texts)):
        return None
    return "".join(parts)


def _line_start(created: float, level: str, logger: str, msg: str) -> str:
    """The line's object up to its fields: ``time`` (digits and punctuation, no escapes) to ``msg``."""
    second = int(created)
    return f'{{"time":"{_utc_second(second)}.{int((created - second) * 1000):03d}Z"{_line_tail(level, logger, msg)}'


@functools.lru_cache(maxsize=64)
def _line_tail(level: str, logger: str, msg: str) -> str:
    return f',"level":{_json_text(level)},"logger":{_json_text(logger)},"msg":{_json_text(msg)}'


class CoalescingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that gathers the lines of one event-loop turn into one write.

    Under load many requests end in the same turn of the loop; writing (and flushing) each
    access line by itself costs a system call per request. :meth:`write_line` (access and auth
    lines, :func:`log_line`) keeps lines until the loop has run the callbacks it had ready, then
    writes them together, so a line reaches the stream within the turn that produced it. Without
    a running loop a line is written at once. Ordinary records (:meth:`emit`) and :meth:`flush`
    (also called by ``logging.shutdown`` at exit) write the gathered lines first, so the stream
    keeps the order lines were made in.
    """

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        # the loop whose next turn will write the pending lines, if one was asked to
        self._scheduled_on: asyncio.AbstractEventLoop | None = None
        self._known_loop: tuple[asyncio.AbstractEventLoop | None, int] = (None, 0)

    def write_line(self, line: str) -> None:
        """Write ``line`` (without terminator) before this turn of the event loop ends."""
        loop = self._running_loop()
        with self._locked():
            scheduled = self._scheduled_on
            if scheduled is not None and scheduled is not loop:
                # asked of a loop that has stopped (or of another thread's): write those now
                self.flush()
            self._pending.append(line + self.terminator)
            if loop is None:
                self.flush()
            elif self._scheduled_on is None:
                self._scheduled_on = loop
                loop.call_soon(self.flush)

    def _running_loop(self) -> asyncio.AbstractEventLoop | None:
        """This thread's running loop, without a lookup when it is the one seen last.

        ``asyncio.get_running_loop`` costs a getpid system call on Python 3.11; a loop that is
        running in the thread that last found it running is that thread's running loop (one
        thread runs at most one loop at a time).
        """
        known, thread = self._known_loop
        if known is not None and thread == threading.get_ident() and known.is_running():
            return known
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        self._known_loop = (loop, threading.get_ident())
        return loop

    def flush(self) -> None:
        with self._locked():
            self._scheduled_on = None
            if self._pending:
                text, self._pending = "".join(self._pending), []
                try:
                    self.stream.write(text)
                except Exception:
                    self.handleError(logging.makeLogRecord({"msg": "log write failed"}))
            super().flush()

    def emit(self, record: logging.LogRecord) -> None:
        if self._pending:
            self.flush()
        super().emit(record)

    def _locked(self) -> Any:
        return self.lock if self.lock is not None else contextlib.nullcontext()


# the JSON handler configure_logging installed (None for text), while it is the only handler
_JSON_HANDLER: CoalescingStreamHandler | None = None


def _direct_handler(logger: logging.Logger, level: int) -> CoalescingStreamHandler | None:
    """The JSON handler, when a line of ``logger`` at ``level`` would reach it and nothing else.

    That is: logging configured by the CLI in JSON and nothing added since (no other handler,
    no filter on the way). Then a line can be written to it directly (:func:`log_line`).
    """
    handler = _JSON_HANDLER
    root = logging.root
    if (
        handler is None
        or handler.level > level
        or not (logger.propagate and LOG.propagate)
        or logger.handlers
        or logger.filters
        or LOG.handlers
        or LOG.filters
        or root.filters
        or handler.filters
        or len(root.handlers) != 1
        or root.handlers[0] is not handler
    ):
        return None
    return handler


def log_line(logger: logging.Logger, level: int, msg: str, fields: Mapping[str, Any]) -> None:
    """One line of ``logger`` at ``level``, as ``logger.log(level, msg, extra={"fields": fields})`` writes it.

    Written straight to the JSON handler when that is where the line would go anyway
    (:func:`_direct_handler`): the same redaction and the same JSON, without building a
    LogRecord and walking the logger tree, and gathered with the other lines of the same
    event-loop turn into one write. Anything else (text format, extra handlers or filters, a
    test's log capture) takes the ordinary path. ``msg`` is a plain message (no ``%`` arguments).
    """
    if not logger.isEnabledFor(level):
        return
    handler = _direct_handler(logger, level)
    if handler is None:
        logger.log(level, msg, extra={"fields": fields})
        return
    created = time.time()
    level_name = _LEVEL_NAMES.get(level) or logging.getLevelName(level).lower()
    text = _redacted_message(msg)
    # fields redaction would leave alone (the usual line) are written in one pass
    members = _flat_members(fields, unredacted=True)
    if members is None:
        line = json_line(created, level_name, logger.name, text, _redact_mapping(fields, 0))
    else:
        line = _line_start(created, level_name, logger.name, text) + members + "}"
    handler.write_line(line)


# messages given to log_line are the code's own, a few dozen: each is redacted once
_redacted_message: Final = functools.lru_cache(maxsize=256)(redact)
_LEVEL_NAMES: Final = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning", logging.ERROR: "error"}


def log_access(
    *,
    request_id: str,
    method: str,
    path: str,
    route: str,
    status: int,
    duration_ms: float,
    user: str | None,
    client_ip: str | None,
) -> None:
    """One access log line (``authproxy.access``, "request", these fields): :func:`log_line`.

    One per request, so the usual line (fields redaction would leave alone, logging as the CLI
    configured it) is written from the values themselves, without a mapping to walk
    (:func:`_access_members`); any other goes through :func:`log_line` with the same fields.
    """
    if not ACCESS.isEnabledFor(logging.INFO):
        return
    handler = _direct_handler(ACCESS, logging.INFO)
    if handler is not None:
        members = _access_members(request_id, method, path, route, status, duration_ms, user, client_ip)
        if members is not None:
            handler.write_line(_line_start(time.time(), "info", ACCESS.name, "request") + members + "}")
            return
    fields = {
        "request_id": request_id,
        "method": method,
        "path": path,
        "route": route,
        "status": status,
        "duration_ms": duration_ms,
        "user": user,
        "client_ip": client_ip,
    }
    log_line(ACCESS, logging.INFO, "request", fields)


def _access_members(
    request_id: str,
    method: str,
    path: str,
    route: str,
    status: int,
    duration_ms: float,
    user: str | None,
    client_ip: str | None,
) -> str | None:
    """What ``_flat_members(fields, unredacted=True)`` makes of the access line's fields, or None.

    None (the caller takes the general path) for a value of another type than the usual ones,
    or text that may hold a credential, which is where :func:`_flat_members` gives None too.
    """
    if (
        type(request_id) is not str
        or type(method) is not str
        or type(path) is not str
        or type(route) is not str
        or type(status) is not int
        or type(duration_ms) is not float
        or not math.isfinite(duration_ms)
    ):
        return None
    texts = f"{request_id}\x00{method}\x00{path}\x00{route}"
    if user is None:
        user_json = "null"
    elif type(user) is str:
        texts += "\x00" + user
        user_json = _json_text(user)
    else:
        return None
    if client_ip is None:
        client_ip_json = "null"
    elif type(client_ip) is str:
        texts += "\x00" + client_ip
        client_ip_json = _json_text(client_ip)
    else:
        return None
    if may_hold_credential(texts):
        return None
    return (
        f',"request_id":{_json_text(request_id)},"method":{_json_text(method)},"path":{_json_text(path)}'
        f',"route":{_json_text(route)},"status":{int.__repr__(status)},"duration_ms":{float.__repr__(duration_ms)}'
        f',"user":{user_json},"client_ip":{client_ip_json}'
    )


# what a bare text value may not hold: separators, quotes, and control characters (C0, DEL, C1),
# which a terminal would act on (an ESC sequence from a request path can erase or rewrite lines)
_TEXT_QUOTED: Final = re.compile(r"[\s\"=\\\x00-\x1f\x7f-\x9f]")


def _text_value(value: Any) -> str:
    """logfmt-style: bare when simple, JSON-quoted (every control character escaped) otherwise."""
    if isinstance(value, str):
        if value and not _TEXT_QUOTED.search(value):
            return value
        text = json.dumps(value)
    else:
        text = json.dumps(value, default=str, separators=(",", ":"))
    # json escapes C0 and (ensure_ascii) everything above ASCII, but leaves DEL as it is
    return text.replace("\x7f", "\\u007f")


class TextFormatter(logging.Formatter):
    """``time level logger msg key=value ...`` for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        parts = [stamp, record.levelname.lower(), record.name, redact(record.getMessage())]
        parts += [f"{k}={_text_value(v)}" for k, v in record_fields(record).items() if v is not None]
        line = " ".join(parts)
        error = _exception_text(self, record)
        if error is not None:
            line += "\n" + error
        return line


def _log_uncaught(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
    # through the handler, so the traceback is one redacted JSON line instead of raw stderr text
    LOG.critical("uncaught exception", exc_info=(kind, error, trace))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or args.exc_type is SystemExit:
        return
    LOG.critical(
        "uncaught exception in a thread",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        extra={"fields": {"thread": args.thread.name if args.thread else None}},
    )


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Send every log record to stderr in the chosen format. Called once, by the CLI."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r}: expected one of {', '.join(LOG_FORMATS)}")
    # no record carries thread, process or source-line details: skip collecting them per record
    # (the logging HOWTO's "Optimization": _srcfile = None skips the stack walk of findCaller)
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    global _JSON_HANDLER
    handler = CoalescingStreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    _JSON_HANDLER = handler if fmt == "json" else None
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's own access log duplicates ours and would print query strings
    logging.getLogger("aiohttp.access").disabled = True
    # warnings.warn and uncaught exceptions would otherwise write raw, unredacted text to stderr
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """An auth event (login, refresh, logout, ...) with its fields."""
    log_line(AUTH, level, event, {"event": event, **fields})


def log_identity_too_large(
    route: str, too_large: Iterable[tuple[str, int]], *, user: str | None, request_id: str | None
) -> None:
    """A warning for each identity header left out of a request for its size (never its value)."""
    for header, size in too_large:
        LOG.warning(
            "identity header too large: not sent",
            extra={
                "fields": {
                    "route": route,
                    "header": header,
                    "bytes": size,
                    "limit": MAX_IDENTITY_FIELD,
                    "user": user,
                    "request_id": request_id,
                }
            },
        )
