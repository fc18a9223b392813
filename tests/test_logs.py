"""Logs (SPEC section 6): JSON lines on stderr, access-log fields, auth events, never a secret.

A real proxy subprocess runs a login, refreshes (the provider's access tokens live 30 s and the
proxy refreshes 60 s before expiry, so every authenticated request refreshes), a refused
refresh, a failed login, a 502 and a sign-out. Its whole stderr must then be JSON objects, one
per line, and must contain none of the credentials of the run: the provider records every code,
state, verifier and token it issued or received, the browser every cookie the proxy set.
``redact`` and the formatters are checked on their own with tables of shapes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from authproxy import logs as logs_module
from authproxy.logs import REDACTED, JsonFormatter, TextFormatter, is_secret_name, redact, redact_value
from tests.support.logs import logs_with
from tests.support.ops import JSON, OpsStack, json_records, login, start_ops_stack, upstream_seen

QUERY_SECRET = "q-value-that-must-not-be-logged-7f3a"


@dataclass
class Run:
    """What one scripted session through the proxy left behind."""

    logs: str
    secrets: dict[str, set[str]]
    request_id_502: str


def _pieces(value: str) -> set[str]:
    """``value`` and, for a JWT, its payload and signature: a log must not carry a part either."""
    parts = value.split(".")
    if len(parts) in (3, 5):
        return {value} | {part for part in parts[1:] if len(part) >= 16}
    if value.startswith("v1."):
        return {value, value[3:]}
    return {value}


async def _scenario(stack: OpsStack) -> Run:
    async with stack.browser() as b:
        anonymous = await b.get(f"{stack.url}/app/page?q={QUERY_SECRET}", headers=JSON)
        assert anonymous.status == 401
        page = await login(b, stack, f"/app/page%3Fq%3D{QUERY_SECRET}")
        assert page.status == 200 and upstream_seen(page)["x-forwarded-user"] == "alice", page
        again = await b.get(f"{stack.url}/app/again?q={QUERY_SECRET}", headers=JSON)
        assert again.status == 200
        dead = await b.get(f"{stack.url}/dead/x", headers=JSON)
        assert dead.status == 502
        request_id = dead.headers["X-Request-Id"]
        forged = await b.get(f"{stack.url}/oauth2/callback?code=forged-code&state=forged-state", headers=JSON)
        assert forged.status == 400
        stack.provider.set_fault("invalid_grant_on_refresh")
        refused = await b.get(f"{stack.url}/app/refused", headers=JSON)
        assert refused.status == 401
        stack.provider.set_fault(None)
        page = await login(b, stack, "/app/back")
        assert page.status == 200
        sign_out = await b.get(f"{stack.url}/oauth2/sign_out?rd=/", follow_redirects=False)
        stack.note_cookies(b)
        assert sign_out.status == 302, sign_out
        after = await b.get(f"{stack.url}/app/after", headers=JSON)
        assert after.status == 401
    logs = await logs_with(stack.proxy, '"path":"/app/after"', '"status":401')
    return Run(logs, stack.secrets(), request_id)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    directory = tmp_path_factory.mktemp("logs")
    with start_ops_stack(directory, config={"session": {"refresh_before_expiry": "60s"}}, access_token_ttl=30) as stack:
        yield asyncio.run(_scenario(stack))


@pytest.fixture(scope="module")
def records(run: Run) -> list[dict[str, Any]]:
    return json_records(run.logs)


def access_lines(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("logger") == "authproxy.access"]


def events(records: list[dict[str, Any]], name: str, **fields: Any) -> list[dict[str, Any]]:
    return [r for r in records if r.get("event") == name and all(r.get(k) == v for k, v in fields.items())]


# ---------------------------------------------------------------------------------------------- the whole run


def test_every_line_is_one_json_object(run: Run, records: list[dict[str, Any]]) -> None:
    assert len(records) == len(run.logs.splitlines()) > 10
    for record in records:
        assert {"time", "level", "logger", "msg"} <= record.keys(), record


def test_no_credential_of_the_run_appears_in_the_logs(run: Run) -> None:
    secrets = run.secrets
    # the run really produced each kind, so their absence below means something
    minimum = {"code": 2, "state": 2, "code_verifier": 2, "access_token": 4, "refresh_token": 4, "id_token": 4}
    for kind, count in minimum.items():
        assert len(secrets[kind]) >= count, (kind, len(secrets[kind]))
    assert len(secrets["cookie"]) >= 4  # two flow cookies, two session cookies
    leaked = {
        kind: piece[:12] + "..."
        for kind, values in secrets.items()
        for value in values
        for piece in _pieces(value)
        if piece in run.logs
    }
    assert not leaked, leaked
    assert QUERY_SECRET not in run.logs


def test_access_log_fields(records: list[dict[str, Any]]) -> None:
    lines = access_lines(records)
    assert lines
    for line in lines:
        for key in ("time", "request_id", "method", "path", "route", "status", "duration_ms", "client_ip"):
            assert line.get(key) is not None, (key, line)
        assert "?" not in line["path"], line
        assert line["client_ip"] == "127.0.0.1"
        assert isinstance(line["status"], int) and isinstance(line["duration_ms"], int | float)
        assert line["duration_ms"] >= 0
    signed_in = [line for line in lines if line["path"] == "/app/again"]
    assert [(line["user"], line["status"], line["route"], line["method"]) for line in signed_in] == [
        ("alice", 200, "app", "GET")
    ]
    anonymous = [line for line in lines if line["path"] == "/app/page" and line["status"] == 401]
    assert anonymous and anonymous[0]["user"] is None
    auth = [line for line in lines if line["path"] == "/oauth2/callback"]
    assert auth and {line["route"] for line in auth} == {"_auth"}


async def test_the_access_log_names_the_user_whenever_the_session_is_known(tmp_path: Path) -> None:
    # SPEC section 6: "user (sub) when known": a refusal by the allow rules, the forward-auth
    # check, /userinfo and the sign-out all know whose session it is (bob is not in admins)
    admins_only = {"name": "admins", "upstream": "http://127.0.0.1:9", "allow": {"groups": ["admins"]}}
    anyone = {"name": "anyone", "match": {"path_prefix": "/anyone"}, "upstream": "http://127.0.0.1:9"}
    with start_ops_stack(tmp_path, config={"routes": [admins_only, anyone]}) as stack:
        async with stack.browser() as b:
            refused = await login(b, stack, "/admin", user="bob")
            assert refused.status == 403
            # admitted, on aiohttp's path (a POST): the upstream is down, the user still known
            assert (await b.post(stack.url + "/anyone/form", headers=JSON)).status == 502
            for path, status in (("/oauth2/auth", 202), ("/oauth2/userinfo", 200)):
                assert (await b.get(stack.url + path, headers=JSON)).status == status
            sign_out = await b.get(stack.url + "/oauth2/sign_out", follow_redirects=False)
            assert sign_out.status == 302
        logs = await logs_with(stack.proxy, '"path":"/oauth2/sign_out"', '"status":302')
    lines = access_lines(json_records(logs))
    answered = {(line["path"], line["status"]): line["user"] for line in lines if line["path"] != "/oauth2/start"}
    assert answered == {
        ("/admin", 403): "bob",
        ("/anyone/form", 502): "bob",
        ("/oauth2/callback", 302): "bob",
        ("/oauth2/auth", 202): "bob",
        ("/oauth2/userinfo", 200): "bob",
        ("/oauth2/sign_out", 302): "bob",
    }


def test_access_log_request_id_is_the_one_the_client_saw(run: Run, records: list[dict[str, Any]]) -> None:
    [line] = [line for line in access_lines(records) if line["request_id"] == run.request_id_502]
    assert (line["path"], line["route"], line["status"]) == ("/dead/x", "dead", 502)
    failures = [r for r in records if r.get("request_id") == run.request_id_502 and r["logger"] != "authproxy.access"]
    assert failures and failures[0]["kind"] == "refused"


def test_auth_events(run: Run, records: list[dict[str, Any]]) -> None:
    assert len(events(records, "login_ok", user="alice")) == 2
    [failed] = events(records, "login_failed")
    assert failed["reason"] and failed["level"] in ("info", "warning")
    assert events(records, "refresh", result="ok", user="alice")
    assert events(records, "refresh", result="invalid_grant", user="alice")
    assert events(records, "logout", user="alice")
    for record in records:
        if record.get("logger") == "authproxy.auth":
            assert record.get("event"), record


# ---------------------------------------------------------------------------------------------- text format


def test_text_format_is_readable_and_redacted(tmp_path: Path) -> None:
    with start_ops_stack(tmp_path, args=("--log-format", "text", "--log-level", "debug")) as stack:

        async def session() -> None:
            async with stack.browser() as b:
                page = await login(b, stack, "/app/text")
                assert page.status == 200
                assert (await b.get(f"{stack.url}/public/x?q={QUERY_SECRET}")).status == 200

        asyncio.run(session())
        # a streamed answer reaches the client before its access-log line is written: wait for it
        deadline = time.monotonic() + 5
        while "path=/public/x" not in stack.proxy.logs() and time.monotonic() < deadline:
            time.sleep(0.05)
        logs = stack.proxy.logs()
        secrets = stack.secrets()
    lines = logs.splitlines()
    assert lines and not any(line.startswith("{") for line in lines)
    access = [line for line in lines if " authproxy.access " in line]
    assert any("route=public" in line and "status=200" in line and "path=/public/x" in line for line in access)
    assert any("route=app" in line and "user=alice" in line for line in access)
    assert any(" login_ok " in line and "user=alice" in line for line in lines)
    assert QUERY_SECRET not in logs
    leaked = [kind for kind, values in secrets.items() for value in values for p in _pieces(value) if p in logs]
    assert not leaked


def test_a_text_log_line_carries_no_control_character_a_client_sent(tmp_path: Path) -> None:
    # a path is decoded before it is logged: %1B is an ESC that, written raw, lets a client
    # rewrite what an operator's terminal shows (erase the line, move the cursor up, recolour)
    escapes = "%1B%5B2K%1B%5B1A%08%00%C2%9B"
    with start_ops_stack(tmp_path, args=("--log-format", "text")) as stack:
        with urllib.request.urlopen(f"{stack.url}/public/x{escapes}y", timeout=5) as answer:
            assert answer.status == 200
        deadline = time.monotonic() + 5
        while "route=public" not in stack.proxy.logs() and time.monotonic() < deadline:
            time.sleep(0.05)
        logs = stack.proxy.logs()
    [line] = [line for line in logs.splitlines() if " authproxy.access " in line and "route=public" in line]
    assert not [char for char in line if ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F], line
    assert 'path="/public/x\\u001b[2K\\u001b[1A\\b\\u0000\\u009by"' in line


# ---------------------------------------------------------------------------------------------- redact()

JWT = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0"
    ".eyJzdWIiOiJhbGljZSIsImF1ZCI6ImNsaWVudCJ9"
    ".c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU"
)
TICKET = "v1." + "A1b2_C3d-" * 11 + "xyzw0123"  # the shape of a sealed ticket: 107 characters


@pytest.mark.parametrize(
    ("text", "gone", "kept"),
    [
        (f"id_token={JWT}", [JWT, "c2lnbmF0dXJl"], ["id_token="]),
        (f"bare jwt {JWT} in a sentence", [JWT], ["bare jwt", "in a sentence"]),
        (f"JWE {JWT}.ZW5jcnlwdGVk.dGFn", [JWT, "ZW5jcnlwdGVk"], ["JWE"]),
        ("Authorization: Bearer opaque-token-123", ["opaque-token-123"], ["Authorization"]),
        ("authorization=Basic dXNlcjpwYXNzd29yZA==", ["dXNlcjpwYXNzd29yZA"], []),
        ("sent bearer abcDEF123._~+/= to it", ["abcDEF123"], ["sent bearer", "to it"]),
        (
            "/oauth2/callback?code=c0de-123&state=st4te-456&iss=x",
            ["c0de-123", "st4te-456"],
            ["/oauth2/callback", "iss=x"],
        ),
        (
            "grant_type=refresh_token&refresh_token=rt-1&client_secret=cs-2",
            ["rt-1", "cs-2"],
            ["grant_type=refresh_token"],
        ),
        ("code_verifier=" + "v" * 43, ["v" * 43], ["code_verifier="]),
        ('{"access_token": "at-json", "expires_in": 300}', ["at-json"], ['"expires_in": 300']),
        ('{"refresh_token":"rt-json"}', ["rt-json"], []),
        ("{'id_token_hint': 'hint-repr', 'client_id': 'app'}", ["hint-repr"], ["'client_id': 'app'"]),
        ("logout_token=lt-form&x=1", ["lt-form"], ["x=1"]),
        ("client_assertion=ca-jwt-ish", ["ca-jwt-ish"], []),
        ("X-Auth-Request-Access-Token: xarat-value", ["xarat-value"], []),
        ("X-Forwarded-Id-Token: xfit-value", ["xfit-value"], []),
        ("Cookie: authproxy_session=anything; theme=dark", ["anything", "theme=dark"], ["Cookie"]),
        ("Set-Cookie: authproxy_session=val; Path=/; HttpOnly", ["val; Path"], ["Set-Cookie"]),
        (f"cookie value {TICKET} seen", [TICKET, TICKET[3:]], ["cookie value", "seen"]),
        ("rd=%2Fapp%3Fcode%3Dnested-code%26state%3Dnested-state", ["nested-code", "nested-state"], ["rd=%2Fapp"]),
        ("redis://:hunter2-pass@redis:6379/0", ["hunter2-pass"], ["redis://", "@redis:6379/0"]),
        ("https://user:pa55word@idp.example.com/x", ["pa55word"], ["https://user:", "@idp.example.com/x"]),
        ("password=pw-123 passwd: pw-456", ["pw-123", "pw-456"], []),
        ("session_secret=ss-1 api_key=ak-2 apikey=ak-3", ["ss-1", "ak-2", "ak-3"], []),
        ("ticket=tk-123", ["tk-123"], []),
    ],
    ids=[
        "jwt-param",
        "jwt-bare",
        "jwe",
        "bearer-header",
        "basic-form",
        "bearer-text",
        "callback-query",
        "refresh-form",
        "verifier",
        "json-access-token",
        "json-compact",
        "python-repr",
        "logout-token",
        "client-assertion",
        "x-auth-request-header",
        "x-forwarded-id-token",
        "cookie-header",
        "set-cookie-header",
        "ticket",
        "encoded-url-in-rd",
        "redis-url-password",
        "url-userinfo",
        "passwords",
        "suffix-names",
        "ticket-param",
    ],
)
def test_redact_removes_credentials(text: str, gone: list[str], kept: list[str]) -> None:
    cleaned = redact(text)
    for secret in gone:
        assert secret not in cleaned, cleaned
    for part in kept:
        assert part in cleaned, cleaned
    assert "redacted" in cleaned


@pytest.mark.parametrize(
    "text",
    [
        "request GET /app/page 200",
        "status_code=200 exitcode=1 barcode=7 unicode=8",
        "login failed: state mismatch",
        "no flow cookie for this state",
        "token endpoint: invalid_grant",
        "refresh failed: the provider answered invalid_grant",
        "http://127.0.0.1:8080/path@x",
        "client_auth_method=client_secret_basic",
        "listening on 127.0.0.1:4180",
        "",
    ],
    ids=["access", "code-suffixes", "state-word", "cookie-word", "token-word", "reason", "port-not-password",
         "auth-method", "listen", "empty"],
)  # fmt: skip
def test_redact_keeps_ordinary_text(text: str) -> None:
    assert redact(text) == text


def test_redact_is_idempotent() -> None:
    text = f"code=abc&state=def Bearer {JWT} Cookie: a=b {TICKET}"
    once = redact(text)
    assert redact(once) == once


TEMPLATES = [
    "code={}",
    "?state=x&code={}&iss=y",
    "Authorization: Bearer {}",
    "authorization: Basic {}",
    '{{"refresh_token": "{}", "expires_in": 300}}',
    "{{'access_token': '{}'}}",
    "client_secret={}",
    "code_verifier: {}",
    "Cookie: authproxy_session={}; theme=dark",
    "https://user:{}@idp.example.com/",
    "eyJhbGciOiJSUzI1NiJ9.{}.c2lnbmF0dXJlLXZhbHVl",
]
credential = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", min_size=12, max_size=40
)


@settings(max_examples=200, deadline=None, database=None)
@example(prefix="BEARER", suffix="", secret="0" * 12, template="code_verifier: {}")  # bearer ate the name
@given(prefix=st.text(max_size=80), suffix=st.text(max_size=80), secret=credential, template=st.sampled_from(TEMPLATES))
def test_redact_removes_a_credential_whatever_surrounds_it(
    prefix: str, suffix: str, secret: str, template: str
) -> None:
    # the credential must be what a leak would show, not text that is there anyway
    assume(secret not in f"{prefix} {template} {suffix} [redacted-jwt] [redacted-ticket]")
    assert secret not in redact(f"{prefix} {template.format(secret)} {suffix}")


@pytest.mark.parametrize(
    "hostile",
    [
        "a-" * 32768, "a_" * 32768 + "=", "eyJ" + "a." * 32768, "eyJaaaa" * 9362, "code=1&" * 9362,
        "http://" + "a:" * 32768, "a://" * 16384, "a://b:" * 10922, "bearer " * 9362, "%3F" * 21845,
        "v1.aaaa" * 9362, "cookie=\"" * 8192, " a-b-c-d_token" * 4681, "eyJaaaa." * 8192, "x" * 65536,
    ],
    ids=[
        "hyphen-run", "underscore-run", "jwt-dots", "jwt-heads", "params", "url-colons", "schemes",
        "scheme-userinfo", "bearer-words", "encoded-question", "tickets", "cookie-quotes", "token-names",
        "jwt-segments", "plain",
    ],
)  # fmt: skip
def test_redact_takes_linear_time_on_hostile_text(hostile: str) -> None:
    # request paths and provider answers reach the log: a quadratic pattern would let one
    # request hold the event loop for seconds
    started = time.perf_counter()
    redact(hostile)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("refresh_token", True), ("Access-Token", True), ("X-Auth-Request-Access-Token", True), ("code", True),
        ("state", True), ("code_verifier", True), ("client_secret", True), ("Cookie", True), ("set-cookie", True),
        ("authorization", True), ("session_cookie", True), ("secrets", True), ("nonce", True),
        ("user", False), ("status", False), ("status_code", False), ("reason", False), ("event", False),
        ("request_id", False), ("path", False), ("client_ip", False), ("exitcode", False),
    ],
    ids=lambda value: value if isinstance(value, str) else ("secret" if value else "plain"),
)  # fmt: skip
def test_secret_field_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_redact_value_handles_every_shape() -> None:
    class Opaque:
        def __str__(self) -> str:
            return "object holding code=obj-code"

    loop: list[Any] = []
    loop.append(loop)
    value = {
        "refresh_token": "looks-harmless",
        "user": "alice",
        "nested": {"Cookie": "c-value", "list": [f"Bearer {JWT}", 3, None, True]},
        "tuple": ("token=t-value",),
        "bytes": b"client_secret=b-value",
        "object": Opaque(),
        "error": ValueError("access_token=e-value"),
        "loop": loop,
        7: "int key",
        "empty_secret": None,
    }
    cleaned = redact_value(value)
    text = json.dumps(cleaned)
    for secret in ("looks-harmless", "c-value", JWT, "t-value", "b-value", "obj-code", "e-value"):
        assert secret not in text
    assert cleaned["user"] == "alice" and cleaned["7"] == "int key" and cleaned["empty_secret"] is None
    assert cleaned["nested"]["list"][1:] == [3, None, True]


# ---------------------------------------------------------------------------------------------- formatters


def _record(msg: str, *args: object, fields: dict[str, Any] | None = None, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError(f"token endpoint said access_token=exc-token {JWT}")
        except RuntimeError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("authproxy.test", logging.WARNING, __file__, 1, msg, args, exc_info)
    if fields is not None:
        record.fields = fields
    return record


def test_json_formatter_redacts_message_fields_and_traceback() -> None:
    record = _record(
        "refresh with %s failed",
        "refresh_token=arg-token",
        fields={"client_secret": "f-secret", "user": "bob"},
        exc=True,
    )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "warning" and entry["logger"] == "authproxy.test" and entry["user"] == "bob"
    assert entry["client_secret"] == REDACTED
    for secret in ("arg-token", "f-secret", "exc-token", JWT):
        assert secret not in line
    assert "RuntimeError" in entry["error"] and "Traceback" in entry["error"]


def test_json_formatter_redacts_secrets_nested_under_ordinary_field_names() -> None:
    # nothing at the top looks like a credential: only a look inside the values finds them
    fields = {"user": "bob", "answer": {"access_token": "n-secret", "expires_in": 300}, "tried": ["code=l-code", 2]}
    line = JsonFormatter().format(_record("token answer", fields=fields))
    entry = json.loads(line)
    assert entry["user"] == "bob"
    assert entry["answer"] == {"access_token": REDACTED, "expires_in": 300}
    assert entry["tried"][1] == 2
    assert "n-secret" not in line and "l-code" not in line


def test_json_formatter_fields_cannot_hide_the_standard_keys() -> None:
    entry = json.loads(JsonFormatter().format(_record("real", fields={"msg": "fake", "level": "debug", "x": 1})))
    assert (entry["msg"], entry["level"], entry["field_msg"], entry["field_level"], entry["x"]) == (
        "real", "warning", "fake", "debug", 1,
    )  # fmt: skip


def test_json_formatter_keeps_one_line_for_hostile_text() -> None:
    line = JsonFormatter().format(_record("line\nbreak \x00 \u2028 \udcff", fields={"v": "a\r\nb"}))
    assert "\n" not in line and "\r" not in line and line.isascii()
    assert json.loads(line)["v"] == "a\r\nb"


def test_text_formatter_quotes_and_redacts() -> None:
    line = TextFormatter().format(
        _record("hello", fields={"reason": "state mismatch", "code": "c-1", "user": "alice", "skipped": None})
    )
    assert 'reason="state mismatch"' in line and f"code={REDACTED}" in line and "user=alice" in line
    assert "c-1" not in line and "skipped" not in line


def test_configured_process_writes_warnings_and_crashes_as_redacted_json() -> None:
    program = (
        "import warnings\n"
        "from authproxy.logs import configure_logging, LOG\n"
        "configure_logging('info', 'json')\n"
        "LOG.info('ready', extra={'fields': {'refresh_token': 'field-token'}})\n"
        "warnings.warn('careless warning with code=warn-code')\n"
        "raise RuntimeError('crash with Bearer crash-token')\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    records = json_records(done.stderr)
    assert records[0]["msg"] == "ready"
    assert any("careless warning" in r["msg"] for r in records)
    assert any(r["msg"] == "uncaught exception" and "RuntimeError" in r["error"] for r in records)
    for secret in ("field-token", "warn-code", "crash-token"):
        assert secret not in done.stderr


def test_unknown_log_format_is_refused() -> None:
    from authproxy.logs import configure_logging

    with pytest.raises(ValueError, match="log format"):
        configure_logging("info", "xml")


_FRAGMENTS = [
    *("eyJhbGciOi", "J9.eyJzdWIi", ".sig", "code", "state", "=", ":", "%3D", "%253D", "Bearer ", "basic "),
    *("v1.", "A" * 40, "redis://", "u:", "@h", "Cookie", "refresh_token", " ", "/", "?", "&", "x", "'", '"'),
]


@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=12))
def test_the_cheap_pre_scan_never_passes_text_a_redaction_would_change(parts: list[str]) -> None:
    text = "".join(parts)
    if logs_module._MAY_HOLD_CREDENTIAL.search(text) is None:
        assert all(pattern.sub(replacement, text) == text for pattern, replacement in logs_module._REDACTIONS)


@pytest.fixture
def configured_json_logging() -> Iterator[Any]:
    """configure_logging as the CLI calls it, writing to a buffer; everything restored after."""
    import io

    root = logging.getLogger()
    saved = (
        root.handlers[:],
        root.level,
        sys.excepthook,
        logs_module._JSON_HANDLER,
        logging.getLogger("py.warnings"),
    )
    logs_module.configure_logging("info", "json")
    buffer = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    try:
        yield buffer
    finally:
        root.handlers[:], level, sys.excepthook, logs_module._JSON_HANDLER, threading.excepthook = saved
        root.setLevel(level)
        logging.captureWarnings(False)


@contextlib.contextmanager
def only_the_cli_handler() -> Iterator[None]:
    """The root logger's handlers as the CLI leaves them, for a moment.

    pytest adds its capture handlers to the root logger for every test, after the fixtures have
    run; with them there, no line could take the direct path the tests below are about.
    """
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = [handler for handler in saved if handler is logs_module._JSON_HANDLER]
    try:
        assert logs_module._direct_handler(logs_module.ACCESS, logging.INFO) is logs_module._JSON_HANDLER
        yield
    finally:
        root.handlers[:] = saved


ACCESS_FIELDS = {
    "request_id": "r1",
    "method": "GET",
    "path": "/a?code=secret-code",
    "route": "app",
    "status": 200,
    "duration_ms": 1.5,
    "user": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
    "client_ip": "127.0.0.1",
}


def test_the_direct_access_line_is_the_line_the_logging_path_writes(configured_json_logging: Any) -> None:
    with only_the_cli_handler():
        logs_module.log_access(**ACCESS_FIELDS)
        logs_module.ACCESS.info("request", extra={"fields": dict(ACCESS_FIELDS)})
    direct, logged = (json.loads(line) for line in configured_json_logging.getvalue().splitlines())
    direct.pop("time"), logged.pop("time")
    assert direct == logged
    assert direct["path"] == "/a?code=[redacted]" and direct["user"] == "[redacted-jwt]"


@pytest.mark.parametrize(
    ("logger_name", "level", "msg", "fields"),
    [
        pytest.param("authproxy.auth", logging.INFO, "refresh ok", {"event": "refresh", "user": "alice"}, id="auth"),
        pytest.param(
            "authproxy.auth",
            logging.WARNING,
            "refresh failed: the provider is unavailable",
            {"event": "refresh", "result": "unavailable", "user": "alice", "code": "c-1"},
            id="auth-warning-secret-field",
        ),
        pytest.param("authproxy.auth", logging.ERROR, "stored token=abc", {"n": [1, 2]}, id="credential-in-msg"),
        pytest.param("authproxy.access", logging.INFO, "request", dict(ACCESS_FIELDS), id="access"),
    ],
)
def test_a_direct_line_is_the_line_the_logging_path_writes(
    configured_json_logging: Any, logger_name: str, level: int, msg: str, fields: dict[str, Any]
) -> None:
    logger = logging.getLogger(logger_name)
    with only_the_cli_handler():
        logs_module.log_line(logger, level, msg, dict(fields))
        logger.log(level, msg, extra={"fields": dict(fields)})
    direct, logged = (json.loads(line) for line in configured_json_logging.getvalue().splitlines())
    direct.pop("time"), logged.pop("time")
    assert direct == logged
    assert "abc" not in json.dumps(direct) and "c-1" not in json.dumps(direct)


def test_a_direct_line_below_the_level_is_not_written(configured_json_logging: Any) -> None:
    with only_the_cli_handler():
        logs_module.log_line(logs_module.AUTH, logging.DEBUG, "refresh ok", {"event": "refresh"})
        logs_module.log_access(**{**ACCESS_FIELDS, "path": "/a/b", "user": "alice"})
    assert configured_json_logging.getvalue().count("\n") == 1


def test_access_lines_take_the_logging_path_when_someone_else_listens(configured_json_logging: Any) -> None:
    seen: list[logging.LogRecord] = []

    class Listener(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    listener = Listener()
    with only_the_cli_handler():
        logging.getLogger().addHandler(listener)
        logs_module.log_access(**{**ACCESS_FIELDS, "path": "/a/b", "user": "alice"})
    assert len(seen) == 1 and seen[0].name == "authproxy.access"
    assert len(configured_json_logging.getvalue().splitlines()) == 1


class CountingBuffer:
    """A text stream that remembers each write it was given."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        return None

    def lines(self) -> list[str]:
        return "".join(self.writes).splitlines()


def test_access_lines_of_one_loop_turn_are_written_together_before_the_next() -> None:
    stream = CountingBuffer()
    handler = logs_module.CoalescingStreamHandler(stream)

    async def one_turn() -> list[str]:
        for n in range(5):
            handler.write_line(f"line {n}")
        assert stream.writes == []  # not yet: the turn is not over
        await asyncio.sleep(0)
        return stream.writes[:]

    writes = asyncio.run(one_turn())
    assert writes == ["".join(f"line {n}\n" for n in range(5))]


def test_an_ordinary_record_comes_after_the_access_lines_written_before_it() -> None:
    stream = CountingBuffer()
    handler = logs_module.CoalescingStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))

    async def mixed() -> None:
        handler.write_line("access 1")
        handler.emit(logging.makeLogRecord({"msg": "warning"}))
        handler.write_line("access 2")
        await asyncio.sleep(0)

    asyncio.run(mixed())
    assert stream.lines() == ["access 1", "warning", "access 2"]


def test_no_line_is_held_back_when_the_loop_ends_before_writing_it() -> None:
    stream = CountingBuffer()
    handler = logs_module.CoalescingStreamHandler(stream)

    async def last_line() -> None:
        handler.write_line("written as the loop stops")

    loop = asyncio.new_event_loop()
    loop.run_until_complete(last_line())
    loop.close()  # its scheduled write never ran
    handler.write_line("after the loop")  # no loop now: written at once, the stranded line first
    assert stream.lines() == ["written as the loop stops", "after the loop"]

    async def next_loop() -> None:
        handler.write_line("on a new loop")
        await asyncio.sleep(0)

    asyncio.run(next_loop())
    assert stream.lines()[-1] == "on a new loop"


_FIELD_VALUES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)


@given(
    created=st.floats(min_value=0, max_value=4e9),
    msg=st.text(),
    fields=st.dictionaries(
        st.text() | st.sampled_from(["msg", "time", "field_msg", "\x00error", "error"]), _FIELD_VALUES
    ),
)
@example(created=1.5, msg="request", fields={"duration_ms": 0.1 + 0.2, "status": 200, "user": '\u00e9\u2028\n"\\'})
@example(created=1.5, msg="request", fields={"ratio": float("nan"), "big": 10**30, "flag": True})
def test_a_json_line_is_what_the_json_encoder_makes_of_the_entry(
    created: float, msg: str, fields: dict[str, Any]
) -> None:
    entry: dict[str, Any] = {
        "time": logs_module._utc_second(int(created)) + f".{int((created - int(created)) * 1000):03d}Z",
        "level": "info",
        "logger": "authproxy.access",
        "msg": msg,
    }
    for key, value in fields.items():
        if key == "\x00error":
            entry["error"] = value
        else:
            entry[f"field_{key}" if key in {"time", "level", "logger", "msg"} else key] = value
    line = logs_module.json_line(created, "info", "authproxy.access", msg, fields)
    assert line == json.JSONEncoder(default=str, separators=(",", ":"), ensure_ascii=True).encode(entry)


@given(st.text())
@example("ba\u017fic x")
@example("EYJ")
@example("a%253Db")
def test_the_credential_pre_scan_agrees_with_its_pattern(text: str) -> None:
    assert logs_module.may_hold_credential(text) == (logs_module._MAY_HOLD_CREDENTIAL.search(text) is not None)


@given(
    fields=st.dictionaries(
        st.text(max_size=8) | st.sampled_from(["code", "user", "access_token", "msg"]),
        _FIELD_VALUES | st.sampled_from(["eyJhbGciOi.x.y", "a=b", "/x:y", "Bearer abc", "/plain/path"]),
    )
)
def test_unredacted_fields_are_written_as_is_only_when_redaction_would_leave_them_alone(
    fields: dict[str, Any],
) -> None:
    direct = logs_module._flat_members(fields, unredacted=True)
    if direct is not None:
        assert direct == logs_module._flat_members(logs_module._redact_mapping(fields, 0), unredacted=False)
        assert logs_module._redact_mapping(fields, 0) == fields


def test_a_plain_access_line_is_the_line_the_logging_path_writes(configured_json_logging: Any) -> None:
    fields = {**ACCESS_FIELDS, "path": "/a/b", "user": "alice", "client_ip": None, "duration_ms": 0.07}
    with only_the_cli_handler():
        logs_module.log_access(**fields)
        logs_module.ACCESS.info("request", extra={"fields": dict(fields)})
    direct, logged = configured_json_logging.getvalue().splitlines()
    assert direct.split(",", 1)[1] == logged.split(",", 1)[1]
    assert json.loads(direct)["path"] == "/a/b"


_ACCESS_TEXTS = st.text() | st.sampled_from(["eyJhbGciOi.x.y", "/a?code=x", "/x:y", "Bearer abc", "/plain/path", ""])
_ACCESS_VALUES = {
    "request_id": _ACCESS_TEXTS,
    "method": st.sampled_from(["GET", "POST", "BASIC"]) | st.text(max_size=8),
    "path": _ACCESS_TEXTS,
    "route": _ACCESS_TEXTS,
    "status": st.integers(),
    "duration_ms": st.floats(),
    "user": st.none() | _ACCESS_TEXTS,
    "client_ip": st.none() | st.sampled_from(["127.0.0.1", "::1", "v1." + "A" * 50]),
}


@settings(max_examples=300, database=None)
@given(**_ACCESS_VALUES)
@example(request_id="r", method="GET", path="/", route="app", status=200, duration_ms=0.07, user=None, client_ip=None)
def test_the_access_lines_members_are_what_the_general_writer_makes_of_its_fields(**fields: Any) -> None:
    # the same text, or None from both (then the line takes the general path, with redaction)
    assert logs_module._access_members(**fields) == logs_module._flat_members(fields, unredacted=True)


@settings(max_examples=100, database=None)
@given(**{**_ACCESS_VALUES, "status": st.booleans() | st.text(max_size=3), "duration_ms": st.integers()})
def test_access_values_of_unusual_types_take_the_general_path(**fields: Any) -> None:
    assert logs_module._access_members(**fields) is None


@settings(max_examples=60, database=None)
@given(
    **{**_ACCESS_VALUES, "user": st.none(), "client_ip": st.none()},
    odd=st.sampled_from(["user", "client_ip"]),
    value=st.integers() | st.binary(max_size=4) | st.lists(st.text(max_size=3), max_size=2),
)
def test_a_user_or_client_address_of_another_type_takes_the_general_path(odd: str, value: Any, **fields: Any) -> None:
    fields[odd] = value
    assert logs_module._access_members(**fields) is None
