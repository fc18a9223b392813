"""A scripted browser for HTTP-level login tests: cookies, redirects and forms as browsers do them.

    async with ScriptedBrowser() as browser:
        page = await login_demo(browser, proxy_url + "/private", "alice")
        assert page.status == 200 and [status for status, _ in page.history][:1] == [302]
        page = await browser.get(proxy_url + "/x", headers={"Accept": "application/json"})

Why not aiohttp's own jar and redirects: its ``CookieJar`` keeps cookies deleted with
``Expires=Thu, 01 Jan 1970`` (docs/testing.md), and automatic redirects hide the hops a login test wants
to assert. This one follows RFC 6265 (host-only and Domain cookies keyed by host, path-match,
Max-Age over Expires, deletion, Secure only over https and only set from https, ``__Host-`` and
``__Secure-`` prefixes) and models SameSite the way current browsers do: a navigation is
cross-site when its initiator or any hop of its redirect chain is on another site (scheme plus
registrable domain; ports never count), and then ``Strict`` cookies stay home and ``Lax`` ones (the
default) travel only on top-level GET navigations.
"""

from __future__ import annotations

import contextlib
import email.utils
import ipaddress
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
NAVIGATION_ACCEPT: Final = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
USER_AGENT: Final = "Mozilla/5.0 (authproxy scripted browser)"
MAX_REDIRECTS: Final = 20


# ---------------------------------------------------------------------------------------------
# Cookies (RFC 6265)
# ---------------------------------------------------------------------------------------------


@dataclass
class Cookie:
    name: str
    value: str
    domain: str
    host_only: bool
    path: str
    expires: float | None  # None: a session cookie
    secure: bool
    http_only: bool
    same_site: str  # "lax" (also the default), "strict" or "none"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def site_of(url: str) -> tuple[str, str]:
    """Scheme and registrable domain; the last two labels stand in for the public suffix list."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not _is_ip(host):
        host = ".".join(host.split(".")[-2:])
    return parts.scheme, host


def default_path(request_path: str) -> str:
    """RFC 6265 section 5.1.4."""
    if not request_path.startswith("/") or request_path.count("/") == 1:
        return "/"
    return request_path[: request_path.rfind("/")]


def path_matches(request_path: str, cookie_path: str) -> bool:
    """RFC 6265 section 5.1.4 path-match."""
    if request_path == cookie_path:
        return True
    if request_path.startswith(cookie_path):
        return cookie_path.endswith("/") or request_path[len(cookie_path)] == "/"
    return False


def domain_matches(host: str, domain: str) -> bool:
    """RFC 6265 section 5.1.3; never for IP addresses unless identical."""
    return host == domain or (not _is_ip(host) and host.endswith("." + domain))


def parse_set_cookie(header: str, url: str, now: float) -> Cookie | None:
    """One Set-Cookie header as received at ``url``; None when a browser would ignore it."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    pair, *attributes = header.split(";")
    name, sep, value = pair.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name:
        return None
    cookie = Cookie(name, value, host, True, default_path(parts.path or "/"), None, False, False, "lax")
    max_age: float | None = None
    for attribute in attributes:
        key, _, raw = attribute.partition("=")
        key, raw = key.strip().lower(), raw.strip()
        if key == "expires" and max_age is None:
            with contextlib.suppress(TypeError, ValueError):
                cookie.expires = email.utils.parsedate_to_datetime(raw).timestamp()
        elif key == "max-age":
            try:
                max_age = int(raw)
            except ValueError:
                continue
            cookie.expires = now + max_age if max_age > 0 else 0.0
        elif key == "domain" and raw:
            domain = raw.lstrip(".").lower()
            if not domain_matches(host, domain):
                return None  # a foreign domain: rejected (RFC 6265 section 5.3 step 6)
            cookie.domain, cookie.host_only = domain, False
        elif key == "path" and raw.startswith("/"):
            cookie.path = raw
        elif key == "secure":
            cookie.secure = True
        elif key == "httponly":
            cookie.http_only = True
        elif key == "samesite" and raw.lower() in {"lax", "strict", "none"}:
            cookie.same_site = raw.lower()
    https = parts.scheme == "https"
    if cookie.secure and not https:
        return None  # RFC 6265bis: an insecure origin cannot set a Secure cookie
    if cookie.same_site == "none" and not cookie.secure:
        return None  # browsers reject SameSite=None without Secure
    if name.startswith("__Secure-") and not cookie.secure:
        return None
    if name.startswith("__Host-") and not (cookie.secure and cookie.host_only and cookie.path == "/"):
        return None
    return cookie


class CookieStore:
    """Cookies keyed by (domain, path, name); ports are ignored, as browsers ignore them."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._cookies: dict[tuple[str, str, str], Cookie] = {}

    def receive(self, url: str, set_cookie_headers: Sequence[str]) -> None:
        now = self.clock()
        for header in set_cookie_headers:
            cookie = parse_set_cookie(header, url, now)
            if cookie is None:
                continue
            key = (cookie.domain, cookie.path, cookie.name)
            if cookie.expires is not None and cookie.expires <= now:
                self._cookies.pop(key, None)  # a deletion, including the 1970 Expires form
            else:
                self._cookies[key] = cookie

    def _live(self) -> list[Cookie]:
        now = self.clock()
        expired = [key for key, cookie in self._cookies.items() if cookie.expires is not None and cookie.expires <= now]
        for key in expired:
            del self._cookies[key]
        return list(self._cookies.values())

    def matching(
        self, url: str, *, cross_site: bool = False, method: str = "GET", navigation: bool = True
    ) -> list[Cookie]:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        found = []
        for cookie in self._live():
            if cookie.host_only and host != cookie.domain:
                continue
            if not cookie.host_only and not domain_matches(host, cookie.domain):
                continue
            if not path_matches(parts.path or "/", cookie.path):
                continue
            if cookie.secure and parts.scheme != "https":
                continue
            if cross_site and cookie.same_site == "strict":
                continue
            if cross_site and cookie.same_site == "lax" and not (navigation and method in {"GET", "HEAD"}):
                continue
            found.append(cookie)
        # RFC 6265 section 5.4: longer paths first
        return sorted(found, key=lambda cookie: -len(cookie.path))

    def header_for(self, url: str, **context: Any) -> str | None:
        cookies = self.matching(url, **context)
        return "; ".join(f"{cookie.name}={cookie.value}" for cookie in cookies) or None

    def get(self, name: str, host: str | None = None) -> str | None:
        """The value of a live cookie called ``name`` (on ``host`` when given)."""
        for cookie in self._live():
            if cookie.name == name and (host is None or cookie.domain == host):
                return cookie.value
        return None

    def all(self) -> list[Cookie]:
        return self._live()

    def set(self, cookie: Cookie) -> None:
        self._cookies[(cookie.domain, cookie.path, cookie.name)] = cookie

    def clear(self, host: str | None = None) -> None:
        for key in [key for key in self._cookies if host is None or key[0] == host]:
            del self._cookies[key]


# ---------------------------------------------------------------------------------------------
# Forms
# ---------------------------------------------------------------------------------------------


@dataclass
class Button:
    name: str | None
    value: str
    label: str


@dataclass
class Form:
    action: str
    method: str
    id: str | None
    fields: list[tuple[str, str]] = field(default_factory=list)
    buttons: list[Button] = field(default_factory=list)

    def field(self, name: str) -> str | None:
        return next((value for key, value in self.fields if key == name), None)

    def button(self, wanted: str | tuple[str, str] | None) -> Button | None:
        """By (name, value), or by name, value or label; None: the first (default) button."""
        for button in self.buttons:
            if wanted is None:
                return button
            if isinstance(wanted, tuple):
                if (button.name, button.value) == wanted:
                    return button
            elif wanted in (button.name, button.value, button.label):
                return button
        return None


_TEXT_INPUTS: Final = frozenset({"text", "hidden", "password", "email", "number", "search", "tel", "url", ""})


class FormParser(HTMLParser):
    """Collects forms, their successful controls and submit buttons (stdlib html.parser)."""

    def __init__(self, base_url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base_url = base_url
        self.forms: list[Form] = []
        self._current: Form | None = None
        # controls outside their form, attached by the form="id" attribute once all is parsed
        self._detached: list[tuple[str, tuple[str, str] | Button]] = []
        self._text_target: tuple[str, dict[str, str]] | None = None
        self._text: list[str] = []
        self._select: tuple[str | None, dict[str, str]] | None = None
        self._select_value: str | None = None

    def _owner(self, attrs: dict[str, str]) -> tuple[Form | None, str | None]:
        return (None, attrs["form"]) if "form" in attrs else (self._current, None)

    def _add(self, attrs: dict[str, str], item: tuple[str, str] | Button) -> None:
        owner, form_id = self._owner(attrs)
        if form_id is not None:
            self._detached.append((form_id, item))
        elif owner is not None:
            if isinstance(item, Button):
                owner.buttons.append(item)
            else:
                owner.fields.append(item)

    def handle_starttag(self, tag: str, attributes: list[tuple[str, str | None]]) -> None:
        attrs = {key: value or "" for key, value in attributes}
        if tag == "form":
            action = urljoin(self.base_url, attrs.get("action") or self.base_url)
            self._current = Form(action, (attrs.get("method") or "get").upper(), attrs.get("id"))
            self.forms.append(self._current)
        elif tag == "input" and "disabled" not in attrs:
            kind, name, value = attrs.get("type", "").lower(), attrs.get("name"), attrs.get("value", "")
            if kind in {"submit", "image"}:
                self._add(attrs, Button(name, value, value))
            elif name and (kind in _TEXT_INPUTS or (kind in {"checkbox", "radio"} and "checked" in attrs)):
                self._add(attrs, (name, value or ("on" if kind in {"checkbox", "radio"} else "")))
        elif tag in {"button", "textarea"} and "disabled" not in attrs:
            self._text_target, self._text = (tag, attrs), []
        elif tag == "select":
            self._select, self._select_value = (attrs.get("name"), attrs), None
        elif tag == "option" and self._select is not None:
            value = attrs.get("value", "")
            if self._select_value is None or "selected" in attrs:
                self._select_value = value

    def handle_data(self, data: str) -> None:
        if self._text_target is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None
        elif self._text_target is not None and tag == self._text_target[0]:
            kind, attrs = self._text_target
            text = " ".join("".join(self._text).split())
            self._text_target = None
            if kind == "textarea" and attrs.get("name"):
                self._add(attrs, (attrs["name"], "".join(self._text)))
            elif kind == "button" and attrs.get("type", "submit").lower() == "submit":
                self._add(attrs, Button(attrs.get("name"), attrs.get("value", ""), text))
        elif tag == "select" and self._select is not None:
            name, attrs = self._select
            if name and self._select_value is not None:
                self._add(attrs, (name, self._select_value))
            self._select = None

    def close(self) -> None:
        super().close()
        by_id = {form.id: form for form in self.forms if form.id}
        for form_id, item in self._detached:
            form = by_id.get(form_id)
            if form is None:
                continue
            if isinstance(item, Button):
                form.buttons.append(item)
            else:
                form.fields.append(item)


def parse_forms(html: str, base_url: str) -> list[Form]:
    parser = FormParser(base_url)
    parser.feed(html)
    parser.close()
    return parser.forms


# ---------------------------------------------------------------------------------------------
# The browser
# ---------------------------------------------------------------------------------------------


@dataclass
class Page:
    """One response after redirects, fully read; ``history`` lists every hop, this one last."""

    status: int
    url: str
    method: str
    headers: CIMultiDictProxy[str]
    body: bytes
    history: list[tuple[int, str]]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def location(self) -> str | None:
        return self.headers.get("Location")

    @property
    def forms(self) -> list[Form]:
        return parse_forms(self.text, self.url)

    def find_form(self, predicate: Callable[[Form], bool]) -> Form | None:
        return next((form for form in self.forms if predicate(form)), None)

    def __repr__(self) -> str:
        hops = " -> ".join(f"{status} {url}" for status, url in self.history)
        return f"<Page {hops}>"


def _url(text: str) -> URL:
    # Location values arrive already percent-encoded: keep them as sent (no re-quoting)
    if text.isascii() and text.isprintable() and " " not in text:
        return URL(text, encoded=True)
    return URL(text)


class ScriptedBrowser:
    """One browser profile: its own cookie store over one ``aiohttp.ClientSession``."""

    def __init__(
        self,
        *,
        user_agent: str = USER_AGENT,
        max_redirects: int = MAX_REDIRECTS,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cookies = CookieStore(clock)
        self.user_agent = user_agent
        self.max_redirects = max_redirects
        self.history: list[tuple[int, str]] = []
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ScriptedBrowser:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # cookies are ours to manage: aiohttp's jar must neither store nor send any
            self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), timeout=self._timeout)
        return self._session

    async def get(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        follow_redirects: bool = True,
        initiator: str | None = None,
    ) -> Page:
        return await self.request("GET", url, headers=headers, follow_redirects=follow_redirects, initiator=initiator)

    async def post(
        self,
        url: str,
        data: Mapping[str, str] | Sequence[tuple[str, str]] | bytes | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        follow_redirects: bool = True,
        initiator: str | None = None,
    ) -> Page:
        return await self.request(
            "POST", url, data=data, headers=headers, follow_redirects=follow_redirects, initiator=initiator
        )

    async def request(
        self,
        method: str,
        url: str,
        *,
        data: Mapping[str, str] | Sequence[tuple[str, str]] | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        follow_redirects: bool = True,
        initiator: str | None = None,
        navigation: bool = True,
    ) -> Page:
        """Send, follow redirects by hand (recording each hop), and read the final body.

        ``initiator`` is the URL of the page the request comes from (None: typed into the
        address bar); ``navigation=False`` makes it a script's fetch, for SameSite decisions.
        """
        method = method.upper()
        body: bytes | None = None
        extra = CIMultiDict(headers or {})
        if isinstance(data, bytes):
            body = data
        elif data is not None:
            body = urlencode(list(data.items()) if isinstance(data, Mapping) else list(data)).encode()
            extra.setdefault("Content-Type", "application/x-www-form-urlencoded")
        cross_site = initiator is not None and site_of(initiator) != site_of(url)
        hops: list[tuple[int, str]] = []
        previous: str | None = None
        while True:
            if previous is not None and site_of(previous) != site_of(url):
                cross_site = True  # one cross-site hop makes the whole chain cross-site
            request_headers = CIMultiDict(extra)
            request_headers.setdefault("User-Agent", self.user_agent)
            request_headers.setdefault("Accept", NAVIGATION_ACCEPT)
            cookie = self.cookies.header_for(url, cross_site=cross_site, method=method, navigation=navigation)
            if cookie is not None and "Cookie" not in extra:
                request_headers["Cookie"] = cookie
            async with self.session.request(
                method, _url(url), data=body, headers=request_headers, allow_redirects=False
            ) as response:
                self.cookies.receive(url, response.headers.getall("Set-Cookie", []))
                content = await response.read()
                status, response_headers = response.status, CIMultiDictProxy(CIMultiDict(response.headers))
            hops.append((status, url))
            self.history.append((status, url))
            location = response_headers.get("Location")
            if not follow_redirects or status not in REDIRECT_STATUSES or location is None:
                return Page(status, url, method, response_headers, content, hops)
            if len(hops) > self.max_redirects:
                raise RuntimeError(f"too many redirects: {hops}")
            previous, url = url, urljoin(url, location)
            if status == 303 or (status in {301, 302} and method == "POST"):
                # RFC 9110 section 15.4: the browser's rewrite to GET, without the body
                method, body = ("HEAD" if method == "HEAD" else "GET"), None
                extra.popall("Content-Type", None)

    async def submit(
        self,
        page: Page,
        form: Form | None = None,
        *,
        fields: Mapping[str, str] | None = None,
        button: str | tuple[str, str] | None = None,
        follow_redirects: bool = True,
    ) -> Page:
        """Submit ``form`` (default: the page's first form) as a browser would, from ``page``."""
        if form is None:
            forms = page.forms
            if not forms:
                raise AssertionError(f"no form on {page!r}:\n{page.text[:2000]}")
            form = forms[0]
        values = list(form.fields)
        for name, value in (fields or {}).items():
            values = [(key, old) for key, old in values if key != name] + [(name, value)]
        if form.buttons:
            chosen = form.button(button)
            if chosen is None:
                raise AssertionError(f"no button {button!r} in form {form.action}: {form.buttons}")
            if chosen.name:
                values.append((chosen.name, chosen.value))
        if form.method == "GET":
            parts = urlsplit(form.action)
            target = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(values), ""))
            return await self.get(target, follow_redirects=follow_redirects, initiator=page.url)
        return await self.post(form.action, values, follow_redirects=follow_redirects, initiator=page.url)


# ---------------------------------------------------------------------------------------------
# Logins
# ---------------------------------------------------------------------------------------------


def _demo_login_form(username: str) -> Callable[[Form], bool]:
    return lambda form: form.button(("username", username)) is not None


async def login_demo(browser: ScriptedBrowser, start_url: str, username: str) -> Page:
    """Open ``start_url``, pick ``username`` on the development provider's page, follow through.

    If the page reached offers no demo login (an SSO-silent login, an error), it is returned as is.
    """
    page = await browser.get(start_url)
    form = page.find_form(_demo_login_form(username))
    if form is None:
        if page.find_form(lambda form: form.button("username") is not None) is not None:
            raise AssertionError(f"the demo login page has no user {username!r}")
        return page
    return await browser.submit(page, form, button=("username", username))


async def cancel_demo_login(browser: ScriptedBrowser, start_url: str) -> Page:
    """Open ``start_url`` and press Cancel on the development provider's login page."""
    page = await browser.get(start_url)
    form = page.find_form(lambda form: form.button("cancel") is not None)
    if form is None:
        raise AssertionError(f"no demo login page: {page!r}")
    return await browser.submit(page, form, button="cancel")


async def login_node_provider(
    browser: ScriptedBrowser, start_url: str, username: str, password: str = "any-password"
) -> Page:
    """Through oidc-provider's devInteractions: the login form, then the consent form.

    Either step is skipped when the provider does not ask for it (existing session or grant).
    """
    page = await browser.get(start_url)
    for _ in range(4):
        login = page.find_form(lambda form: form.field("prompt") == "login")
        consent = page.find_form(lambda form: form.field("prompt") == "consent")
        if login is not None:
            page = await browser.submit(page, login, fields={"login": username, "password": password})
        elif consent is not None:
            page = await browser.submit(page, consent)
        else:
            return page
    raise AssertionError(f"oidc-provider kept asking: {page!r}")


async def confirm_node_provider_logout(browser: ScriptedBrowser, page: Page) -> Page:
    """Press "Yes, sign me out" on oidc-provider's RP-initiated logout confirmation page."""
    form = page.find_form(lambda form: form.id == "op.logoutForm")
    if form is None:
        raise AssertionError(f"no oidc-provider logout confirmation: {page!r}")
    return await browser.submit(page, form, button=("logout", "yes"))
