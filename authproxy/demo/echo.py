"""The echo upstream of ``authproxy demo``: shows each request as the upstream received it.

For any method and path it answers with the method, path, query, headers, body size and (for an
urlencoded form of up to 64 KiB) the form fields, the
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
from urllib.parse import parse_qsl

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
FORM_TYPE: Final = "application/x-www-form-urlencoded"
# urlencoded form bodies up to this size are shown field by field
MAX_FORM_SHOWN: Final = 64 * 1024


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
    method: str,
    path: str,
    query: list[tuple[str, str]],
    headers: list[tuple[str, str]],
    body_size: int,
    form: list[tuple[str, str]] | None = None,
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
        "form": None if form is None else [[name, value] for name, value in form],
    }


def wants_json(accept: str, query_format: str | None) -> bool:
    if query_format is not None:
        return query_format == "json"
    types = [part.split(";", 1)[0].strip().lower() for part in accept.split(",")]
    return "application/json" in types and "text/html" not in types


# What the session holds, read from authproxy's /oauth2/userinfo by the browser (same origin).
# The JSON is built with DOM nodes and textContent only: no value is ever parsed as HTML.
SESSION_SECTION: Final = (
    "<section><h2>Your session at authproxy</h2>"
    "<p>authproxy keeps your tokens server-side, encrypted; your browser holds only an opaque, signed "
    "cookie, and this app never sees a token (unless a route sets pass_access_token). authproxy "
    "refreshes the access token shortly before it expires (session.refresh_before_expiry), before "
    "forwarding the request that needs it.</p>"
    '<table id="session"><tr><td class="none">loading /oauth2/userinfo ...</td></tr></table>'
    '<h3>GET /oauth2/userinfo</h3><pre class="json" id="userinfo"></pre></section>'
    "<script>fetch('/oauth2/userinfo',{credentials:'same-origin'}).then(r=>r.ok?r.json():null).then(u=>{"
    "const t=document.getElementById('session');if(!u){t.innerHTML='<tr><td>no session</td></tr>';return;}"
    "const row=(k,v)=>{const tr=t.insertRow();tr.insertCell().textContent=k;tr.insertCell().textContent=v;};"
    "t.innerHTML='';row('user (sub)',u.sub);row('email',u.email||'');row('groups',(u.groups||[]).join(', '));"
    "row('session ends if unused at',new Date(u.expires_at*1000).toLocaleString());"
    "const pre=document.getElementById('userinfo');"
    "const span=(c,x)=>{const s=document.createElement('span');s.className=c;s.textContent=x;return s;};"
    "const put=(v,ind)=>{if(Array.isArray(v)){if(!v.length){pre.append('[]');return;}pre.append('[\\n');"
    "v.forEach((x,i)=>{pre.append(ind+'  ');put(x,ind+'  ');pre.append(i<v.length-1?',\\n':'\\n');});"
    "pre.append(ind+']');}else if(v!==null&&typeof v==='object'){const ks=Object.keys(v);"
    "if(!ks.length){pre.append('{}');return;}pre.append('{\\n');ks.forEach((k,i)=>{pre.append(ind+'  ');"
    "pre.append(span('key',JSON.stringify(k)),': ');put(v[k],ind+'  ');"
    "pre.append(i<ks.length-1?',\\n':'\\n');});pre.append(ind+'}');}"
    "else{pre.append(span(typeof v==='string'?'str':'num',JSON.stringify(v)));}};put(u,'');});</script>"
)

STYLE: Final = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f4f5f7;color:#1f2933}"
    ".dev{background:#b42318;color:#fff;padding:.5rem 1rem;text-align:center;font-weight:600}"
    "main{max-width:60rem;margin:2rem auto;padding:0 1rem}"
    "section{background:#fff;border-radius:10px;padding:1rem 1.5rem;margin-bottom:1rem;"
    "box-shadow:0 1px 4px rgba(0,0,0,.1)}"
    "section.identity{border-left:6px solid #12b76a;background:#ecfdf3}"
    "h3{font-size:.95rem;margin:1rem 0 .4rem;color:#52606d}"
    "table{border-collapse:collapse;width:100%}"
    "th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #e4e7eb;vertical-align:top;font-size:.9rem}"
    # names never break inside a word; values wrap normally and break anywhere only when one
    # unbroken token (a long cookie list, a fingerprint) would not fit otherwise
    "th{width:1%;white-space:nowrap;padding-right:1.5rem;font-family:ui-monospace,SFMono-Regular,Menlo,monospace;"
    "font-weight:500}"
    "td{overflow-wrap:anywhere}section.form td{white-space:pre-wrap}"
    ".none{color:#7b8794}"
    "#session td:first-child{width:1%;white-space:nowrap;padding-right:1.5rem;color:#52606d}"
    "pre.json{margin:0;padding:.75rem 1rem;background:#0d1117;color:#c9d1d9;border-radius:8px;overflow-x:auto;"
    "font:.85rem/1.5 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}"
    "pre.json .key{color:#79c0ff;font-weight:600}pre.json .str{color:#7ee787}pre.json .num{color:#ffa657}"
    "header{display:flex;justify-content:space-between;align-items:center;gap:1rem}"
    "header h1{overflow-wrap:anywhere}a{color:#3e7bfa}"
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
    form = description.get("form")
    form_section = (
        f'<section class="form"><h2>Form fields</h2><table>{rows(form)}</table></section>' if form is not None else ""
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><title>echo upstream</title>'
        f"<style>{STYLE}</style></head><body>"
        '<div class="dev">Echo upstream: development only</div><main>'
        f"<header><h1>{html.escape(description['method'])} {html.escape(description['path'])}</h1>"
        '<a href="/oauth2/sign_out">Sign out</a></header>'
        f'<section class="identity"><h2>Set by authproxy</h2><p>{verdict}</p>'
        f"<table>{rows(identity)}</table></section>"
        + (SESSION_SECTION if identity else "")
        + form_section
        + f"<section><h2>Query</h2><table>{rows(description['query'])}</table></section>"
        f"<section><h2>Other request headers</h2><table>{rows(description['headers'])}</table></section>"
        f"<section><h2>Body</h2><p>{description['body_size']} bytes</p></section>"
        "</main></body></html>"
    )


async def echo(request: web.Request) -> web.StreamResponse:
    body_size = 0
    kept: list[bytes] | None = [] if request.content_type == FORM_TYPE else None
    # counted chunk by chunk: a large upload is never held in memory (only a small form is)
    async for chunk in request.content.iter_chunked(CHUNK):
        body_size += len(chunk)
        if kept is not None and body_size <= MAX_FORM_SHOWN:
            kept.append(chunk)
        elif kept is not None:
            kept = None
    form = None
    if kept is not None:
        form = parse_qsl(b"".join(kept).decode("latin-1"), keep_blank_values=True, encoding="utf-8", errors="replace")
    description = describe_request(
        request.method,
        request.path,
        list(request.query.items()),
        list(request.headers.items()),
        body_size,
        form,
    )
    headers = {"Cache-Control": "no-store"}
    if wants_json(request.headers.get("Accept", ""), request.query.get("format")):
        return web.json_response(description, headers=headers)
    return web.Response(text=render_html(description), content_type="text/html", headers=headers)


def create_echo_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return app
