"""A small development OpenID provider for ``authproxy demo`` and the tests. Not for production.

It implements just enough of the protocols for a relying party to be exercised for real:

- OpenID Connect Discovery 1.0 section 3 (``/.well-known/openid-configuration``) and a JWKS.
- The Authorization Code flow of OpenID Connect Core 1.0 section 3.1, with RFC 7636 PKCE
  (S256 only, required for every client) and the ``iss`` authorization response parameter of
  RFC 9207; ``prompt=login`` and ``prompt=none`` of section 3.1.2.1.
- Client authentication of RFC 6749 section 2.3.1 (``client_secret_basic`` with the form-urlencoded
  id and secret, ``client_secret_post``) and ``none`` for public clients.
- ID tokens per OpenID Connect Core 1.0 section 2 with ``at_hash`` (section 3.1.3.6); refreshed
  ID tokens per section 12.2 (same ``auth_time``, no ``nonce``).
- JWT access tokens per RFC 9068 (``typ: at+jwt``, ``aud`` = client_id).
- Refresh token rotation with reuse detection (RFC 9700 section 4.14.2): presenting a rotated
  refresh token revokes every token of its grant and answers ``invalid_grant``.
- Token revocation (RFC 7009), UserInfo (OpenID Connect Core 1.0 section 5.3),
  RP-Initiated Logout 1.0 and Back-Channel Logout 1.0 section 2.4.

Everything lives in memory. Tests make it misbehave by subclassing the seams
(``id_token_claims``, ``sign_id_token``, ``token_response``, ``userinfo_claims``,
``handle_authorization``, ``handle_token``, ``keys``) rather than by patching. Codes, tokens and
cookie values are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote_plus, urlencode, urlsplit

import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from authproxy.demo.users import DEMO_USERS, DemoUser, find_user
from authproxy.errors import TokenEndpointError

LOG: Final = logging.getLogger("authproxy.demo.provider")

SESSION_COOKIE: Final = "demo_op_session"
CODE_TTL: Final = 60
INTERACTION_TTL: Final = 600
BACKCHANNEL_TIMEOUT: Final = 5.0
BACKCHANNEL_EVENT: Final = "http://schemas.openid.net/event/backchannel-logout"
SUPPORTED_SCOPES: Final = ("openid", "profile", "email", "groups", "offline_access")
AUTH_METHODS: Final = ("client_secret_basic", "client_secret_post", "none")
CLAIMS_SUPPORTED: Final = (
    "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "sid", "at_hash",
    "email", "email_verified", "name", "preferred_username", "groups",
)  # fmt: skip
# RFC 7636 section 4.1: 43-128 characters of the unreserved set
_VERIFIER_RE: Final = re.compile(r"[A-Za-z0-9._~-]{43,128}")
_NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}


# ---------------------------------------------------------------------------------------------
# Values: keys, clients, grants, counters
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    """A private signing key with its JWS ``alg`` and ``kid`` (None: tokens carry no kid)."""

    alg: str
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    kid: str | None

    def public_jwk(self) -> dict[str, Any]:
        """The public half as a JWK (RFC 7517) with ``use``, ``alg`` and ``kid``."""
        public = self.private_key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
        jwk.update({"use": "sig", "alg": self.alg})
        if self.kid is not None:
            jwk["kid"] = self.kid
        return jwk


def generate_signing_key(alg: str = "RS256", kid: str | None = "") -> SigningKey:
    """A fresh key; ``kid=""`` picks a random kid, ``kid=None`` makes a key without one."""
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if alg == "RS256":
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "ES256":
        private_key = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(f"unsupported demo key algorithm: {alg}")
    return SigningKey(alg, private_key, secrets.token_urlsafe(8) if kid == "" else kid)


@dataclass(frozen=True)
class DemoClient:
    """A registered client. ``client_secret=None`` is a public client (auth method ``none``)."""

    client_id: str
    client_secret: str | None
    redirect_uris: Sequence[str]
    post_logout_redirect_uris: Sequence[str] = ()
    # empty: client_secret_basic and client_secret_post for confidential clients, none for public
    auth_methods: Sequence[str] = ()
    backchannel_logout_uri: str | None = None

    def __post_init__(self) -> None:
        # accept lists from callers, keep immutable tuples
        object.__setattr__(self, "redirect_uris", tuple(self.redirect_uris))
        object.__setattr__(self, "post_logout_redirect_uris", tuple(self.post_logout_redirect_uris))
        methods = tuple(self.auth_methods) or (
            ("client_secret_basic", "client_secret_post") if self.client_secret is not None else ("none",)
        )
        unknown = set(methods) - set(AUTH_METHODS)
        if unknown:
            raise ValueError(f"unsupported client auth methods: {sorted(unknown)}")
        if self.client_secret is None and methods != ("none",):
            raise ValueError("a client without a secret can only use the auth method none")
        object.__setattr__(self, "auth_methods", methods)


@dataclass
class ProviderStats:
    """Counters the tests read (``provider.stats.refresh_grants`` ...)."""

    token_requests: int = 0
    code_grants: int = 0
    refresh_grants: int = 0
    refresh_reuses: int = 0
    failed_token_requests: int = 0
    revocations: int = 0
    userinfo_requests: int = 0
    jwks_requests: int = 0
    discovery_requests: int = 0
    authorizations: int = 0
    logins: int = 0
    end_sessions: int = 0
    backchannel_logouts: int = 0


@dataclass(frozen=True)
class AuthorizationRequest:
    """A validated authorization request (OpenID Connect Core 1.0 section 3.1.2.1)."""

    client_id: str
    redirect_uri: str
    scope: tuple[str, ...]
    state: str | None
    nonce: str | None
    code_challenge: str
    prompt: frozenset[str]


@dataclass(frozen=True)
class Grant:
    """What a code or refresh token stands for; ``family`` is shared by all tokens of one login."""

    family: str
    client_id: str
    user: DemoUser
    scope: tuple[str, ...]
    sid: str
    auth_time: int
    nonce: str | None


@dataclass(frozen=True)
class _PendingCode:
    grant: Grant
    redirect_uri: str
    code_challenge: str
    expires_at: float


@dataclass
class _RefreshRecord:
    grant: Grant
    expires_at: float | None
    active: bool = True


@dataclass
class LoginSession:
    """The provider's own SSO session, named by the ``demo_op_session`` cookie."""

    sid: str
    user: DemoUser
    auth_time: int
    clients: set[str] = field(default_factory=set)


# ---------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def s256_challenge(verifier: str) -> str:
    """RFC 7636 section 4.2: BASE64URL(SHA256(ASCII(code_verifier)))."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def verify_pkce(verifier: str, challenge: str) -> bool:
    """RFC 7636 section 4.6, S256 only; a malformed verifier never matches."""
    if not _VERIFIER_RE.fullmatch(verifier):
        return False
    return hmac.compare_digest(s256_challenge(verifier), challenge)


def token_hash(token: str) -> str:
    """``at_hash`` of OpenID Connect Core 1.0 section 3.1.3.6 for a SHA-256 based alg."""
    return b64url(hashlib.sha256(token.encode("ascii")).digest()[:16])


def parse_basic_auth(header: str | None) -> tuple[str, str] | None:
    """RFC 6749 section 2.3.1: id and secret are form-urlencoded before the Basic encoding."""
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except ValueError:
        return None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        return None
    return unquote_plus(client_id), unquote_plus(secret)


def scoped_claims(user: DemoUser, scope: Iterable[str]) -> dict[str, Any]:
    """The user's claims released for ``scope`` (OpenID Connect Core 1.0 section 5.4).

    ``groups`` is always released, as most providers' group mappers do, since the proxy's
    default scopes do not ask for a groups scope.
    """
    scopes = set(scope)
    everything = user.claims()
    released: dict[str, Any] = {"sub": user.sub, "groups": everything["groups"]}
    if "profile" in scopes:
        released.update(name=everything["name"], preferred_username=everything["preferred_username"])
    if "email" in scopes:
        released.update(email=everything["email"], email_verified=everything["email_verified"])
    return released


# ---------------------------------------------------------------------------------------------
# The provider
# ---------------------------------------------------------------------------------------------


class DemoProvider:
    """An in-memory OpenID provider; ``create_app()`` gives the aiohttp application serving it."""

    def __init__(
        self,
        issuer: str,
        clients: Iterable[DemoClient],
        users: Iterable[DemoUser] = DEMO_USERS,
        *,
        access_token_ttl: int = 300,
        id_token_ttl: int = 300,
        refresh_token_ttl: int | None = 86400,
        rotate_refresh_tokens: bool = True,
        keys: Sequence[SigningKey] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self.clients: dict[str, DemoClient] = {client.client_id: client for client in clients}
        self.users: tuple[DemoUser, ...] = tuple(users)
        self.access_token_ttl = access_token_ttl
        self.id_token_ttl = id_token_ttl
        self.refresh_token_ttl = refresh_token_ttl
        self.rotate_refresh_tokens = rotate_refresh_tokens
        # The first key signs; all are published. The default also publishes an ES256 key, as
        # real providers publish several, so relying parties must pick keys by kid.
        self.keys: list[SigningKey] = (
            list(keys) if keys else [generate_signing_key("RS256"), generate_signing_key("ES256")]
        )
        self.clock = clock
        self.stats = ProviderStats()
        self._path = urlsplit(issuer).path.rstrip("/")
        self._codes: dict[str, _PendingCode] = {}
        self._used_codes: dict[str, str] = {}  # spent code -> its grant family
        self._interactions: dict[str, tuple[AuthorizationRequest, float]] = {}
        self._sessions: dict[str, LoginSession] = {}
        self._refresh_tokens: dict[str, _RefreshRecord] = {}
        self._access_families: dict[str, str] = {}  # jti -> grant family
        self._revoked_jtis: set[str] = set()
        self._revoked_families: set[str] = set()

    # -- wiring ---------------------------------------------------------------------------------

    def endpoint(self, name: str) -> str:
        """Absolute URL of one of the provider's endpoints (``token``, ``authorize`` ...)."""
        return f"{self.issuer.rstrip('/')}/{name}"

    def register_client(self, client: DemoClient) -> DemoClient:
        """Add or replace a client (tests register one once they know the RP's redirect URI)."""
        self.clients[client.client_id] = client
        return client

    def create_app(self) -> web.Application:
        app = web.Application()
        app[PROVIDER] = self
        p = self._path
        app.add_routes(
            [
                web.get(f"{p}/.well-known/openid-configuration", self.discovery),
                web.get(f"{p}/jwks", self.jwks),
                web.get(f"{p}/authorize", self.authorize),
                web.post(f"{p}/authorize", self.authorize),
                web.post(f"{p}/authorize/login", self.login),
                web.post(f"{p}/token", self.token),
                web.post(f"{p}/revoke", self.revoke),
                web.get(f"{p}/userinfo", self.userinfo),
                web.post(f"{p}/userinfo", self.userinfo),
                web.get(f"{p}/end_session", self.end_session),
                web.post(f"{p}/end_session", self.end_session),
            ]
        )
        return app

    @property
    def signing_key(self) -> SigningKey:
        return self.keys[0]

    def metadata(self) -> dict[str, Any]:
        """The discovery document (OpenID Connect Discovery 1.0 section 3)."""
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.endpoint("authorize"),
            "token_endpoint": self.endpoint("token"),
            "userinfo_endpoint": self.endpoint("userinfo"),
            "jwks_uri": self.endpoint("jwks"),
            "revocation_endpoint": self.endpoint("revoke"),
            "end_session_endpoint": self.endpoint("end_session"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [self.signing_key.alg],
            "scopes_supported": list(SUPPORTED_SCOPES),
            "claims_supported": list(CLAIMS_SUPPORTED),
            "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
            "revocation_endpoint_auth_methods_supported": list(AUTH_METHODS),
            "code_challenge_methods_supported": ["S256"],
            "prompt_values_supported": ["none", "login"],
            "authorization_response_iss_parameter_supported": True,
            "backchannel_logout_supported": True,
            "backchannel_logout_session_supported": True,
        }

    # -- seams (override in tests to misbehave) --------------------------------------------------

    def id_token_claims(self, grant: Grant, *, access_token: str, now: float) -> dict[str, Any]:
        claims = scoped_claims(grant.user, grant.scope)
        claims.update(
            iss=self.issuer,
            aud=grant.client_id,
            iat=int(now),
            exp=int(now) + self.id_token_ttl,
            auth_time=grant.auth_time,
            sid=grant.sid,
            at_hash=token_hash(access_token),
        )
        if grant.nonce is not None:
            claims["nonce"] = grant.nonce
        return claims

    def jws_headers(self, key: SigningKey, typ: str = "JWT") -> dict[str, Any]:
        headers: dict[str, Any] = {"typ": typ}
        if key.kid is not None:
            headers["kid"] = key.kid
        return headers

    def sign_id_token(self, claims: dict[str, Any], headers: dict[str, Any]) -> str:
        return jwt.encode(claims, self.signing_key.private_key, algorithm=self.signing_key.alg, headers=headers)

    def access_token_claims(self, grant: Grant, *, jti: str, now: float) -> dict[str, Any]:
        """RFC 9068 section 2.2, plus identity claims for bearer-token routes."""
        identity = scoped_claims(grant.user, grant.scope)
        return {
            "iss": self.issuer,
            "sub": grant.user.sub,
            "aud": grant.client_id,
            "client_id": grant.client_id,
            "iat": int(now),
            "exp": int(now) + self.access_token_ttl,
            "jti": jti,
            "scope": " ".join(grant.scope),
            "auth_time": grant.auth_time,
            **{name: identity[name] for name in ("email", "preferred_username", "groups") if name in identity},
        }

    def sign_access_token(self, claims: dict[str, Any]) -> str:
        key = self.signing_key
        return jwt.encode(claims, key.private_key, algorithm=key.alg, headers=self.jws_headers(key, "at+jwt"))

    def userinfo_claims(self, grant: Grant) -> dict[str, Any]:
        return scoped_claims(grant.user, grant.scope)

    def token_response(self, grant: Grant, *, now: float, refresh_token: str | None) -> dict[str, Any]:
        """The token endpoint's success body (RFC 6749 section 5.1, OIDC Core section 3.1.3.3)."""
        jti = secrets.token_urlsafe(16)
        access_token = self.sign_access_token(self.access_token_claims(grant, jti=jti, now=now))
        self._access_families[jti] = grant.family
        body: dict[str, Any] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": self.access_token_ttl,
            "scope": " ".join(grant.scope),
        }
        if "openid" in grant.scope:
            claims = self.id_token_claims(grant, access_token=access_token, now=now)
            body["id_token"] = self.sign_id_token(claims, self.jws_headers(self.signing_key))
        if refresh_token is not None:
            body["refresh_token"] = refresh_token
        return body

    def logout_token_claims(self, session: LoginSession, client_id: str, now: float) -> dict[str, Any]:
        """Back-Channel Logout 1.0 section 2.4."""
        return {
            "iss": self.issuer,
            "aud": client_id,
            "iat": int(now),
            "exp": int(now) + 120,
            "jti": secrets.token_urlsafe(16),
            "sub": session.user.sub,
            "sid": session.sid,
            "events": {BACKCHANNEL_EVENT: {}},
        }

    # -- discovery and keys ---------------------------------------------------------------------

    async def discovery(self, request: web.Request) -> web.Response:
        self.stats.discovery_requests += 1
        return web.json_response(self.metadata())

    async def jwks(self, request: web.Request) -> web.Response:
        self.stats.jwks_requests += 1
        return web.json_response({"keys": [key.public_jwk() for key in self.keys]})

    # -- authorization endpoint -----------------------------------------------------------------

    async def authorize(self, request: web.Request) -> web.Response:
        params = dict(request.query) if request.method == "GET" else dict(await request.post())
        self.stats.authorizations += 1
        self._prune(self.clock())
        client = self.clients.get(str(params.get("client_id", "")))
        redirect_uri = str(params.get("redirect_uri", ""))
        # Never redirect to an unverified URI (RFC 6749 section 4.1.2.1): show the error instead.
        if client is None:
            return error_page(400, "Unknown client", "The client_id is not registered with this provider.")
        if redirect_uri not in client.redirect_uris:
            return error_page(
                400, "Unregistered redirect_uri", "The redirect_uri does not exactly match a registered one."
            )
        state = str(params["state"]) if "state" in params else None
        scope = tuple(dict.fromkeys(str(params.get("scope", "")).split()))
        problem = None
        if params.get("response_type") != "code":
            problem = ("unsupported_response_type", "only response_type=code is supported")
        elif "openid" not in scope:
            problem = ("invalid_scope", "the openid scope is required")
        elif not set(scope) <= set(SUPPORTED_SCOPES):
            problem = ("invalid_scope", "unknown scope requested")
        elif not params.get("code_challenge") or params.get("code_challenge_method") != "S256":
            problem = ("invalid_request", "PKCE with code_challenge_method=S256 is required")
        if problem is not None:
            return self.redirect_to_client(redirect_uri, state, {"error": problem[0], "error_description": problem[1]})
        auth_request = AuthorizationRequest(
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            scope=scope,
            state=state,
            nonce=str(params["nonce"]) if "nonce" in params else None,
            code_challenge=str(params["code_challenge"]),
            prompt=frozenset(str(params.get("prompt", "")).split()),
        )
        return await self.handle_authorization(request, auth_request)

    async def handle_authorization(self, request: web.Request, auth_request: AuthorizationRequest) -> web.Response:
        """SSO-silent when the provider cookie names a live session, else the login page."""
        session = self._sessions.get(request.cookies.get(SESSION_COOKIE, ""))
        if session is not None and "login" not in auth_request.prompt:
            return self.issue_code(auth_request, session)
        if "none" in auth_request.prompt:
            error = {"error": "login_required", "error_description": "no session at the provider"}
            return self.redirect_to_client(auth_request.redirect_uri, auth_request.state, error)
        uid = secrets.token_urlsafe(16)
        self._interactions[uid] = (auth_request, self.clock() + INTERACTION_TTL)
        return login_page(uid, self.endpoint("authorize/login"), auth_request.client_id, self.users)

    async def login(self, request: web.Request) -> web.Response:
        """The login page's POST: one button per user, or Cancel."""
        form = await request.post()
        entry = self._interactions.pop(str(form.get("uid", "")), None)
        if entry is None or entry[1] < self.clock():
            return error_page(
                400, "Login expired", "This login page has expired. Go back to the application and retry."
            )
        auth_request = entry[0]
        if "cancel" in form:
            error = {"error": "access_denied", "error_description": "the user cancelled the login"}
            return self.redirect_to_client(auth_request.redirect_uri, auth_request.state, error, status=303)
        user = find_user(self.users, str(form.get("username", "")))
        if user is None:
            return error_page(400, "Unknown user", "Pick one of the demo users.")
        self.stats.logins += 1
        # a new login (prompt=login) replaces the browser's previous provider session
        self._sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)
        session = LoginSession(secrets.token_urlsafe(16), user, int(self.clock()))
        self._sessions[session.sid] = session
        LOG.info("demo provider login", extra={"fields": {"user": user.username, "client": auth_request.client_id}})
        response = self.issue_code(auth_request, session, status=303)
        response.set_cookie(
            SESSION_COOKIE,
            session.sid,
            path=self._path or "/",
            httponly=True,
            samesite="Lax",
            secure=self.issuer.startswith("https:"),
        )
        return response

    def issue_code(self, auth_request: AuthorizationRequest, session: LoginSession, status: int = 302) -> web.Response:
        """A one-time code bound to client, redirect_uri, PKCE challenge and nonce."""
        grant = Grant(
            family=secrets.token_urlsafe(12),
            client_id=auth_request.client_id,
            user=session.user,
            scope=auth_request.scope,
            sid=session.sid,
            auth_time=session.auth_time,
            nonce=auth_request.nonce,
        )
        code = secrets.token_urlsafe(32)
        self._codes[code] = _PendingCode(
            grant, auth_request.redirect_uri, auth_request.code_challenge, self.clock() + CODE_TTL
        )
        session.clients.add(auth_request.client_id)
        return self.redirect_to_client(auth_request.redirect_uri, auth_request.state, {"code": code}, status=status)

    def redirect_to_client(
        self, redirect_uri: str, state: str | None, params: Mapping[str, str], status: int = 302
    ) -> web.Response:
        """The authorization response with ``state`` and RFC 9207's ``iss``."""
        query = {**params, **({"state": state} if state is not None else {}), "iss": self.issuer}
        separator = "&" if urlsplit(redirect_uri).query else "?"
        location = redirect_uri + separator + urlencode(query)
        return web.Response(status=status, headers={"Location": location, **_NO_STORE})

    # -- token endpoint -------------------------------------------------------------------------

    async def token(self, request: web.Request) -> web.Response:
        self.stats.token_requests += 1
        response = await self.handle_token(request)
        if response.status != 200:
            self.stats.failed_token_requests += 1
        return response

    async def handle_token(self, request: web.Request) -> web.Response:
        form = {key: str(value) for key, value in (await request.post()).items()}
        now = self.clock()
        try:
            client = self.authenticate_client(request.headers.get("Authorization"), form)
            grant_type = form.get("grant_type")
            if grant_type == "authorization_code":
                body = self.exchange_code(client, form, now)
            elif grant_type == "refresh_token":
                body = self.refresh(client, form, now)
            else:
                raise TokenEndpointError("unsupported_grant_type", "use authorization_code or refresh_token")
        except TokenEndpointError as error:
            return oauth_error(error)
        return web.json_response(body, headers=_NO_STORE)

    def authenticate_client(self, authorization: str | None, form: Mapping[str, str]) -> DemoClient:
        """RFC 6749 section 2.3: the method used must be one the client is registered for."""
        basic = parse_basic_auth(authorization)
        if basic is not None:
            client_id, secret, method = basic[0], basic[1], "client_secret_basic"
        elif "client_secret" in form:
            client_id, secret, method = form.get("client_id", ""), form["client_secret"], "client_secret_post"
        elif "client_assertion" in form:
            raise TokenEndpointError("invalid_client", "private_key_jwt is not supported by the demo provider")
        else:
            client_id, secret, method = form.get("client_id", ""), "", "none"
        client = self.clients.get(client_id)
        if client is None or method not in client.auth_methods:
            raise TokenEndpointError("invalid_client", "client authentication failed")
        if method != "none" and not hmac.compare_digest(secret.encode(), (client.client_secret or "").encode()):
            raise TokenEndpointError("invalid_client", "client authentication failed")
        if form.get("client_id", client_id) != client_id:
            raise TokenEndpointError("invalid_client", "client_id does not match the authenticated client")
        return client

    def exchange_code(self, client: DemoClient, form: Mapping[str, str], now: float) -> dict[str, Any]:
        code = form.get("code", "")
        # Popped before any other check: a code is spent by its first use, even a failed one.
        pending = self._codes.pop(code, None)
        if pending is None:
            family = self._used_codes.get(code)
            if family is not None:
                # RFC 6749 section 4.1.2: a reused code revokes what it was exchanged for
                self.revoke_family(family)
            raise TokenEndpointError("invalid_grant", "unknown, expired or already used code")
        self._used_codes[code] = pending.grant.family
        if pending.expires_at < now:
            raise TokenEndpointError("invalid_grant", "the code has expired")
        if pending.grant.client_id != client.client_id:
            raise TokenEndpointError("invalid_grant", "the code was issued to another client")
        if form.get("redirect_uri") != pending.redirect_uri:
            raise TokenEndpointError("invalid_grant", "redirect_uri does not match the authorization request")
        if not verify_pkce(form.get("code_verifier", ""), pending.code_challenge):
            raise TokenEndpointError("invalid_grant", "PKCE verification failed")
        self.stats.code_grants += 1
        refresh_token = self._new_refresh_token(pending.grant, now) if "offline_access" in pending.grant.scope else None
        return self.token_response(pending.grant, now=now, refresh_token=refresh_token)

    def refresh(self, client: DemoClient, form: Mapping[str, str], now: float) -> dict[str, Any]:
        """Refresh with rotation and reuse detection (RFC 6749 section 6, RFC 9700 4.14.2)."""
        record = self._refresh_tokens.get(form.get("refresh_token", ""))
        if record is None or record.grant.client_id != client.client_id:
            raise TokenEndpointError("invalid_grant", "unknown refresh token")
        if record.grant.family in self._revoked_families:
            raise TokenEndpointError("invalid_grant", "the grant has been revoked")
        if not record.active:
            self.stats.refresh_reuses += 1
            self.revoke_family(record.grant.family)
            LOG.warning("demo provider: rotated refresh token reused; grant revoked")
            raise TokenEndpointError("invalid_grant", "refresh token reuse detected; the grant is revoked")
        if record.expires_at is not None and record.expires_at < now:
            raise TokenEndpointError("invalid_grant", "the refresh token has expired")
        scope = record.grant.scope
        if "scope" in form:
            requested = tuple(dict.fromkeys(form["scope"].split()))
            if not set(requested) <= set(scope):
                raise TokenEndpointError("invalid_scope", "a refresh cannot widen the grant's scope")
            scope = requested
        # OIDC Core section 12.2: a refreshed ID token carries the original auth_time and no nonce
        grant = Grant(
            family=record.grant.family,
            client_id=client.client_id,
            user=record.grant.user,
            scope=scope,
            sid=record.grant.sid,
            auth_time=record.grant.auth_time,
            nonce=None,
        )
        self.stats.refresh_grants += 1
        refresh_token = form["refresh_token"]
        if self.rotate_refresh_tokens:
            record.active = False
            refresh_token = self._new_refresh_token(record.grant, now)
        return self.token_response(grant, now=now, refresh_token=refresh_token)

    def _new_refresh_token(self, grant: Grant, now: float) -> str:
        token = secrets.token_urlsafe(32)
        ttl = self.refresh_token_ttl
        self._refresh_tokens[token] = _RefreshRecord(grant, None if ttl is None else now + ttl)
        return token

    def revoke_family(self, family: str) -> None:
        """Revoke every refresh and access token of one grant."""
        self._revoked_families.add(family)
        for record in self._refresh_tokens.values():
            if record.grant.family == family:
                record.active = False

    # -- revocation, userinfo -------------------------------------------------------------------

    async def revoke(self, request: web.Request) -> web.Response:
        """RFC 7009: 200 whether or not the token was known; refresh tokens revoke their grant."""
        form = {key: str(value) for key, value in (await request.post()).items()}
        try:
            client = self.authenticate_client(request.headers.get("Authorization"), form)
        except TokenEndpointError as error:
            return oauth_error(error)
        self.stats.revocations += 1
        token = form.get("token", "")
        record = self._refresh_tokens.get(token)
        if record is not None:
            if record.grant.client_id == client.client_id:
                self.revoke_family(record.grant.family)
            return web.Response(status=200, headers=_NO_STORE)
        claims = self.verify_own_jwt(token, verify_exp=False)
        if claims is not None and claims.get("client_id") == client.client_id and "jti" in claims:
            self._revoked_jtis.add(str(claims["jti"]))
        return web.Response(status=200, headers=_NO_STORE)

    def verify_own_jwt(self, token: str, *, verify_exp: bool) -> dict[str, Any] | None:
        """Claims of a JWT this provider signed with one of its current keys, else None."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            return None
        for key in self.keys:
            if kid is not None and key.kid != kid:
                continue
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key.private_key.public_key(),
                    algorithms=[key.alg],
                    issuer=self.issuer,
                    # expiry is judged below against the provider's (injectable) clock
                    options={
                        "verify_aud": False,
                        "verify_exp": False,
                        "verify_iat": False,
                        "verify_nbf": False,
                        "require": ["iss", "sub", "exp"],
                    },
                )
            except jwt.PyJWTError:
                continue
            if verify_exp and not (isinstance(claims["exp"], int) and claims["exp"] > self.clock()):
                return None
            return claims
        return None

    def active_access_token(self, token: str) -> dict[str, Any] | None:
        claims = self.verify_own_jwt(token, verify_exp=True)
        if claims is None or "jti" not in claims:
            return None
        jti = str(claims["jti"])
        if jti in self._revoked_jtis or self._access_families.get(jti) in self._revoked_families:
            return None
        return claims

    async def userinfo(self, request: web.Request) -> web.Response:
        """OpenID Connect Core 1.0 section 5.3, bearer token in the header (RFC 6750 section 2.1)."""
        self.stats.userinfo_requests += 1
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        claims = self.active_access_token(token.strip()) if scheme.lower() == "bearer" else None
        user = find_user(self.users, str(claims.get("sub", ""))) if claims else None
        if claims is None or user is None:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        grant = Grant(
            family=self._access_families.get(str(claims["jti"]), ""),
            client_id=str(claims.get("client_id", "")),
            user=user,
            scope=tuple(str(claims.get("scope", "")).split()),
            sid="",
            auth_time=int(claims.get("auth_time", 0)),
            nonce=None,
        )
        return web.json_response(self.userinfo_claims(grant), headers=_NO_STORE)

    # -- logout ---------------------------------------------------------------------------------

    async def end_session(self, request: web.Request) -> web.Response:
        """RP-Initiated Logout 1.0: end the SSO session, then redirect or show a page."""
        params = dict(request.query) if request.method == "GET" else dict(await request.post())
        self.stats.end_sessions += 1
        hint = self.verify_own_jwt(str(params.get("id_token_hint", "")), verify_exp=False)
        audience = hint.get("aud") if hint else None
        client_id = str(params.get("client_id") or (audience[0] if isinstance(audience, list) else audience or ""))
        session = self._sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)
        if session is None and hint is not None:
            session = self._sessions.pop(str(hint.get("sid", "")), None)
        if session is not None:
            await self.send_backchannel_logouts(session)
        client = self.clients.get(client_id)
        target = str(params.get("post_logout_redirect_uri", ""))
        if client is not None and target and target in client.post_logout_redirect_uris:
            state = str(params["state"]) if "state" in params else None
            separator = "&" if urlsplit(target).query else "?"
            location = target + (separator + urlencode({"state": state}) if state is not None else "")
            response = web.Response(status=302, headers={"Location": location, **_NO_STORE})
        else:
            response = signed_out_page()
        response.del_cookie(SESSION_COOKIE, path=self._path or "/")
        return response

    async def send_backchannel_logouts(self, session: LoginSession) -> None:
        """Back-Channel Logout 1.0 section 2.5: POST a logout token to each client of the session."""
        targets = [
            client
            for client_id in sorted(session.clients)
            if (client := self.clients.get(client_id)) is not None and client.backchannel_logout_uri
        ]
        if not targets:
            return
        timeout = aiohttp.ClientTimeout(total=BACKCHANNEL_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for client in targets:
                claims = self.logout_token_claims(session, client.client_id, self.clock())
                key = self.signing_key
                logout_token = jwt.encode(
                    claims, key.private_key, algorithm=key.alg, headers=self.jws_headers(key, "logout+jwt")
                )
                assert client.backchannel_logout_uri is not None
                try:
                    async with http.post(client.backchannel_logout_uri, data={"logout_token": logout_token}) as answer:
                        if answer.status == 200:
                            self.stats.backchannel_logouts += 1
                        else:
                            LOG.warning("back-channel logout to %s answered %d", client.client_id, answer.status)
                except (aiohttp.ClientError, TimeoutError) as error:
                    LOG.warning("back-channel logout to %s failed: %s", client.client_id, type(error).__name__)

    def _prune(self, now: float) -> None:
        """Forget expired codes and login pages so a long-running demo does not grow."""
        for code in [code for code, pending in self._codes.items() if pending.expires_at < now]:
            del self._codes[code]
        for uid in [uid for uid, (_, expires) in self._interactions.items() if expires < now]:
            del self._interactions[uid]


PROVIDER: Final = web.AppKey("demo_provider", DemoProvider)


def create_provider_app(
    issuer: str,
    clients: Iterable[DemoClient],
    users: Iterable[DemoUser] = DEMO_USERS,
    **options: Any,
) -> web.Application:
    """The provider's application; ``app[PROVIDER]`` is the ``DemoProvider`` (for its stats)."""
    return DemoProvider(issuer, clients, users, **options).create_app()


# ---------------------------------------------------------------------------------------------
# Pages and error bodies
# ---------------------------------------------------------------------------------------------


def oauth_error(error: TokenEndpointError) -> web.Response:
    """RFC 6749 section 5.2; ``invalid_client`` is a 401."""
    status = 401 if error.error == "invalid_client" else 400
    body = {"error": error.error, "error_description": error.description}
    headers = {**_NO_STORE, **({"WWW-Authenticate": 'Basic realm="demo-provider"'} if status == 401 else {})}
    return web.json_response(body, status=status, headers=headers)


_STYLE: Final = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;background:#f4f5f7;color:#1f2933;margin:0}
.banner{background:#b42318;color:#fff;padding:.6rem 1rem;text-align:center;font-weight:600}
main{max-width:28rem;margin:3rem auto;background:#fff;border-radius:10px;padding:1.5rem 2rem;
box-shadow:0 1px 4px rgba(0,0,0,.12)}
h1{font-size:1.3rem;margin:0 0 .3rem}p{color:#52606d}
button{display:block;width:100%;text-align:left;margin:.5rem 0;padding:.7rem 1rem;border:1px solid #cbd2d9;
border-radius:8px;background:#fff;cursor:pointer;font-size:1rem}
button:hover{border-color:#3e7bfa;background:#f0f5ff}
button small{display:block;color:#616e7c;font-size:.8rem}
button.cancel{text-align:center;color:#616e7c;background:#f4f5f7}
"""


def _page(title: str, body: str, status: int = 200) -> web.Response:
    document = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        '<div class="banner">Development provider: not for production</div>'
        f"<main>{body}</main></body></html>"
    )
    return web.Response(status=status, text=document, content_type="text/html", headers=_NO_STORE)


def login_page(uid: str, action: str, client_id: str, users: Iterable[DemoUser]) -> web.Response:
    """One button per demo user; any click signs that user in (no passwords: development only)."""
    buttons = "".join(
        f'<button type="submit" name="username" value="{html.escape(user.username)}">'
        f"{html.escape(user.name)}<small>{html.escape(user.email)} · groups: "
        f"{html.escape(', '.join(user.groups) or 'none')}</small></button>"
        for user in users
    )
    body = (
        f"<h1>Sign in</h1><p>to <strong>{html.escape(client_id)}</strong> as one of the demo users:</p>"
        f'<form method="post" action="{html.escape(action)}">'
        f'<input type="hidden" name="uid" value="{html.escape(uid)}">{buttons}'
        '<button type="submit" name="cancel" value="1" class="cancel">Cancel</button></form>'
    )
    return _page("Sign in: development provider", body)


def signed_out_page() -> web.Response:
    return _page("Signed out", "<h1>Signed out</h1><p>You are signed out of the development provider.</p>")


def error_page(status: int, title: str, message: str) -> web.Response:
    return _page(title, f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>", status)
