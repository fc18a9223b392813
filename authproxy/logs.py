"""Structured logs (SPEC section 6): JSON lines on stderr, or text for humans.

Two loggers carry the product's records: ``authproxy.access`` (one line per request) and
``authproxy.auth`` (login, refresh, logout events). Fields travel in ``extra={"fields": {...}}``.
A redaction filter on the handler scrubs anything shaped like a credential (JWTs, bearer values,
``code=``/``token=`` parameters, cookie values) from every record, whoever logged it, so a
careless message cannot leak a secret.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, Final

ACCESS: Final = logging.getLogger("authproxy.access")
AUTH: Final = logging.getLogger("authproxy.auth")
LOG: Final = logging.getLogger("authproxy")

_REDACTIONS: Final = (
    # JWS/JWE compact serialisations (ID, access, logout tokens)
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*){1,4}"), "[redacted-jwt]"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 [redacted]"),
    (
        re.compile(
            r"(?i)\b(code|state|token|access_token|refresh_token|id_token|id_token_hint|"
            r"code_verifier|client_secret|client_assertion|logout_token|password|secret)"
            r"(=|\"?\s*:\s*\"?)[^&\s\"',;]+"
        ),
        r"\1\2[redacted]",
    ),
    (re.compile(r"(?i)\b(cookie|set-cookie)(\"?\s*[:=]\s*\"?)[^\n\"]+"), r"\1\2[redacted]"),
    (re.compile(r"\bv1\.[A-Za-z0-9_-]{40,}(?:\.[A-Za-z0-9_-]+)?"), "[redacted-ticket]"),
)


def redact(text: str) -> str:
    """Remove anything shaped like a credential from ``text``."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(_redact_value(fields))
        if record.exc_info:
            entry["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``time level logger msg key=value ...`` for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        parts = [stamp, record.levelname.lower(), record.name, redact(record.getMessage())]
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            parts += [f"{k}={_redact_value(v)}" for k, v in fields.items() if v is not None]
        line = " ".join(str(p) for p in parts)
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        return line


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Send every log record to stderr in the chosen format. Called once, by the CLI."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's own access log duplicates ours and would print query strings
    logging.getLogger("aiohttp.access").disabled = True


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """An auth event (login, refresh, logout, ...) with its fields."""
    AUTH.log(level, event, extra={"fields": {"event": event, **fields}})
