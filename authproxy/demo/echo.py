"""The echo upstream of ``authproxy demo``: shows each request as the upstream received it.

For any method and path it answers with the method, path, query, headers and body size, the
identity headers set by the proxy (SPEC section 4: ``X-Forwarded-User`` and friends,
``X-Authproxy-*``, ``X-Auth-Request-*``) listed first. HTML for browsers, JSON for
``Accept: application/json`` or ``?format=json``. Credentials are never echoed in full: the
``Authorization`` value, forwarded provider tokens and cookie values are replaced by their length
and a short SHA-256 fingerprint, so a test can still tell which token arrived (compare
``fingerprint(token)``) without the page being a way to read someone's token.
"""

from __future__ import annotations

import hashlib
import html
from typing import Any, Final

from aiohttp import web

IDENTITY_HEADERS: Final = frozenset(
    {
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-preferred-username",
        "x-forwarded-groups",
        "x-forwarded-id-token",
    }
)
IDENTITY_PREFIXES: Final = ("x-authproxy-", "x-auth-request-")
# values that are bearer credentials: shown as length + fingerprint only
SECRET_HEADERS: Final = frozenset(
    {"authorization", "proxy-authorization", "x-forwarded-id-token", "x-auth-request-access-token"}
)
COOKIE_HEADERS: Final = frozenset({"cookie", "set-cookie"})
FINGERPRINT_CHARS: Final = 12
CHUNK: Final = 64 * 1024


def fingerprint(value: str) -> str:
    """A short, non-reversible tag of a credential: ``sha256:`` + 12 hex digits."""
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:FINGERPRINT_CHARS]


def is_identity_header(name: str) -> bool:
    """Set by authproxy: the default identity headers and its reserved prefixes."""
    lower = name.lower().replace("_", "-")
    return lower in IDENTITY_HEADERS or lower.startswith(IDENTITY_PREFIXES)


def redact_header(name: str, value: str) -> str:
    """The value as shown: credentials and cookie values reduced to a fingerprint."""
    lower = name.lower().replace("_", "-")
    if lower in SECRET_HEADERS:
        scheme, sep, credential = value.partition(" ")
        if sep and lower.endswith("authorization"):
            return f"{scheme} [redacted {len(credential)} chars, {fingerprint(credential)}]"
        return f"[redacted {len(value)} chars, {fingerprint(value)}]"
    if lower in COOKIE_HEADERS:
        names = [part.split("=", 1)[0].strip() for part in value.split(";") if part.strip()]
        return "; ".join(f"{cookie}=[redacted]" for cookie in names)
    return value


def describe_request(
    method: str, path: str, query: list[tuple[str, str]], headers: list[tuple[str, str]], body_size: int
) -> dict[str, Any]:
    """The JSON description of one request (pure: values in, value out)."""
    shown = [(name, redact_header(name, value)) for name, value in headers]
    return {
        "method": method,
        "path": path,
        "query": [[name, value] for name, value in query],
        "identity_headers": [[name, value] for name, value in shown if is_identity_header(name)],
        "headers": [[name, value] for name, value in shown if not is_identity_header(name)],
        "body_size": body_size,
    }


def wants_json(accept: str, query_format: str | None) -> bool:
    if query_format is not None:
        return query_format == "json"
    types = [part.split(";", 1)[0].strip().lower() for part in accept.split(",")]
    return "application/json" in types and "text/html" not in types


# What the session holds, read from authproxy's /oauth2/userinfo by the browser (same origin).
SESSION_SECTION: Final = (
    "<section><h2>Your session at authproxy</h2>"
    "<p>authproxy keeps your tokens server-side, encrypted; your browser holds only an opaque, signed "
    "cookie, and this app never sees a token (unless a route sets pass_access_token). authproxy "
    "refreshes the access token shortly before it expires (session.refresh_before_expiry), before "
    "forwarding the request that needs it.</p>"
    '<table id="session"><tr><td class="none">loading /oauth2/userinfo ...</td></tr></table></section>'
    "<script>fetch('/oauth2/userinfo',{credentials:'same-origin'}).then(r=>r.ok?r.json():null).then(u=>{"
    "const t=document.getElementById('session');if(!u){t.innerHTML='<tr><td>no session</td></tr>';return;}"
    "const row=(k,v)=>{const tr=t.insertRow();tr.insertCell().textContent=k;tr.insertCell().textContent=v;};"
    "t.innerHTML='';row('user (sub)',u.sub);row('email',u.email||'');row('groups',(u.groups||[]).join(', '));"
    "row('session ends if unused at',new Date(u.expires_at*1000).toLocaleString());});</script>"
)


def render_html(description: dict[str, Any]) -> str:
    def rows(pairs: list[list[str]]) -> str:
        return (
            "".join(f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>" for name, value in pairs)
            or '<tr><td colspan="2" class="none">none</td></tr>'
        )

    identity = description["identity_headers"]
    verdict = (
        "You are signed in: authproxy set these headers after verifying your login."
        if identity
        else "No identity headers: this request reached the app without a login (public route?)."
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><title>echo upstream</title><style>'
        "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f4f5f7;color:#1f2933}"
        ".dev{background:#b42318;color:#fff;padding:.5rem 1rem;text-align:center;font-weight:600}"
        "main{max-width:56rem;margin:2rem auto;padding:0 1rem}"
        "section{background:#fff;border-radius:10px;padding:1rem 1.5rem;margin-bottom:1rem;"
        "box-shadow:0 1px 4px rgba(0,0,0,.1)}"
        "section.identity{border-left:6px solid #12b76a;background:#ecfdf3}"
        "table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .5rem;"
        "border-bottom:1px solid #e4e7eb;vertical-align:top;word-break:break-all;font-size:.9rem}"
        "th{width:30%;font-family:ui-monospace,monospace;font-weight:500}.none{color:#7b8794}"
        "header{display:flex;justify-content:space-between;align-items:center}a{color:#3e7bfa}"
        "</style></head><body>"
        '<div class="dev">Echo upstream: development only</div><main>'
        f"<header><h1>{html.escape(description['method'])} {html.escape(description['path'])}</h1>"
        '<a href="/oauth2/sign_out">Sign out</a></header>'
        f'<section class="identity"><h2>Set by authproxy</h2><p>{verdict}</p>'
        f"<table>{rows(identity)}</table></section>"
        + (SESSION_SECTION if identity else "")
        + f"<section><h2>Query</h2><table>{rows(description['query'])}</table></section>"
        f"<section><h2>Other request headers</h2><table>{rows(description['headers'])}</table></section>"
        f"<section><h2>Body</h2><p>{description['body_size']} bytes</p></section>"
        "</main></body></html>"
    )


async def echo(request: web.Request) -> web.StreamResponse:
    body_size = 0
    # counted chunk by chunk: a large upload is never held in memory
    async for chunk in request.content.iter_chunked(CHUNK):
        body_size += len(chunk)
    description = describe_request(
        request.method,
        request.path,
        list(request.query.items()),
        list(request.headers.items()),
        body_size,
    )
    headers = {"Cache-Control": "no-store"}
    if wants_json(request.headers.get("Accept", ""), request.query.get("format")):
        return web.json_response(description, headers=headers)
    return web.Response(text=render_html(description), content_type="text/html", headers=headers)


def create_echo_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return app
