"""All I/O with the OpenID provider: documents over ``aiohttp``, token requests over the lean client.

- Discovery: OpenID Connect Discovery 1.0 sections 4.1-4.3 (parsing in ``discovery.py``).
- JWKS: fetched lazily, cached, refetched once when a token names an unknown ``kid`` (Core 1.0
  section 10.1.1, key rotation) but at most once every 10 s, so that tokens with made-up kids
  cannot make us hammer the provider. A failed fetch keeps the last good set (unlike PyJWT's
  ``PyJWKClient``, which also blocks on urllib).
- Authorization request: Core 1.0 section 3.1.2.1 with RFC 7636 section 4.3 (S256, always).
- Token requests: RFC 6749 sections 4.1.3 (code, with the RFC 7636 section 4.5 verifier) and 6
  (refresh, with no ``scope``: re-sending one can be refused as ``invalid_scope``).
- Client authentication: RFC 6749 section 2.3.1 (``client_secret_basic`` with the id and secret
  form-urlencoded before base64, ``client_secret_post``), RFC 7523 section 2.2 with Core 1.0
  section 9 (``private_key_jwt``), and ``none`` (public client, ``client_id`` in the body).
- Revocation: RFC 7009 section 2.1 (client authenticated like at the token endpoint).
- UserInfo: Core 1.0 section 5.3 (JSON answers only).

Token and revocation requests (POSTs of a small form, on every login and refresh) go through
:class:`~authproxy.upstream_http.UpstreamClient`, the pooled keep-alive client the proxy forwards
with, at a fraction of aiohttp's CPU per request; discovery, JWKS and UserInfo (GETs, which may
be redirected) stay on ``aiohttp``. Both verify TLS with the same context (``provider.ca_file``).

Errors: unreachable, timed out, 5xx or unparsable -> ``ProviderUnavailable``; an OAuth error
answer (RFC 6749 section 5.2) -> ``TokenEndpointError``. The HTTP clients' exceptions stop here: messages
name what failed, the URL (endpoints are public) and the cause in plain words ("connection
refused", "the host name does not resolve"), never a Python class name, and never carry a token,
code, verifier or secret.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import functools
import logging
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Final, TypeVar
from urllib.parse import quote_plus, urlsplit, urlunsplit

import aiohttp
from yarl import URL

from authproxy.errors import ConfigError, ProviderUnavailable, TokenEndpointError, UnknownKeyId
from authproxy.form_encoding import form_urlencode
from authproxy.json_codec import loads
from authproxy.oidc import tokens
from authproxy.oidc.discovery import ProviderMetadata, discovery_url, parse_provider_metadata
from authproxy.oidc.tokens import KeySet, TokenSet
from authproxy.upstream_http import (
    TLS_CONTEXT,
    UpstreamBadResponse,
    UpstreamClient,
    UpstreamConnectError,
    UpstreamHTTPError,
    UpstreamReset,
    UpstreamResponse,
)

LOG: Final = logging.getLogger("authproxy.oidc.client")

AUTH_METHODS: Final = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
# at most one JWKS fetch per this many seconds once a good set is cached (SPEC section 3)
JWKS_REFETCH_INTERVAL: Final = 10.0
# a cached set older than this is refreshed before use, so keys the provider withdrew stop
# verifying tokens; a failed refresh keeps the old set
JWKS_MAX_AGE: Final = 3600.0
# with no key set at all, fetch attempts are spaced by this much
JWKS_RETRY_WITHOUT_KEYS: Final = 1.0
# provider answers are small JSON documents; anything bigger is refused, not buffered
MAX_ANSWER_BYTES: Final = 1024 * 1024
USER_AGENT: Final = "authproxy"
# ID tokens whose claims are kept after verification, for the next refresh of their session
VERIFIED_CLAIMS_KEPT: Final = 1024

T = TypeVar("T")


class ProviderClient:
    """The provider, as the rest of authproxy sees it; ``start()`` before use, ``close()`` after."""

    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str | None,
        auth_method: str,
        private_key_pem: bytes | None,
        allowed_algorithms: Sequence[str],
        clock_skew: float,
        timeout: float,
        ca_file: str | None,
        refresh_before_expiry: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if auth_method not in AUTH_METHODS:
            raise ConfigError([f"provider.client_auth_method: must be one of {', '.join(AUTH_METHODS)}"])
        if auth_method in ("client_secret_basic", "client_secret_post") and not client_secret:
            raise ConfigError([f"provider.client_secret: required for {auth_method}"])
        self._assertion_key: tokens.AssertionKey | None = None
        # RFC 6749 section 2.3.1: form-urlencode both parts first (a ":" in the id must survive)
        self._basic_credentials = (
            "Basic " + base64.b64encode(f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()).decode("ascii")
            if auth_method == "client_secret_basic" and client_secret
            else None
        )
        if auth_method == "private_key_jwt":
            if private_key_pem is None:
                raise ConfigError(["provider.private_key_file: required for private_key_jwt"])
            self._assertion_key = tokens.load_assertion_key(private_key_pem)
        self.issuer = issuer
        # discovery.py refuses http endpoints for an https issuer: no redirect may lead to one either
        self._https_only = urlsplit(issuer).scheme == "https"
        self.client_id = client_id
        self._client_secret = client_secret
        self.auth_method = auth_method
        self.allowed_algorithms: tuple[str, ...] = tuple(allowed_algorithms)
        self.clock_skew = clock_skew
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ssl = provider_ssl_context(ca_file)
        self._clock = clock
        self._refresh_before_expiry = refresh_before_expiry
        self._lifetime_checked = False
        self._session: aiohttp.ClientSession | None = None
        self._forms: UpstreamClient | None = None
        self._metadata: ProviderMetadata | None = None
        self._keys: KeySet | None = None
        self._keys_fetched_at: float | None = None  # time of the last fetch attempt, good or bad
        self._keys_loaded_at: float | None = None  # time of the last good fetch
        self._keys_generation = 0  # bumped on every good fetch: waiters can see they were served
        self._keys_attempts_ended = 0  # bumped when a fetch ends, good or bad: waiters can see one failed
        self._keys_lock = asyncio.Lock()
        self._keys_refresh: asyncio.Task[None] | None = None  # of a stale set, in the background
        # claims of ID tokens verified here lately, by token: a refresh compares its new ID token
        # with the session's current one, most often the one the previous refresh verified
        self._verified: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.jwks_fetches = 0  # attempts, for /metrics and the tests

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the HTTP session (in the running event loop)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl),
                timeout=self._timeout,
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            )
        if self._forms is None:
            self._forms = UpstreamClient(tls_context=TLS_CONTEXT if self._ssl is True else self._ssl or None)

    async def close(self) -> None:
        if self._keys_refresh is not None:
            self._keys_refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keys_refresh
            self._keys_refresh = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._forms is not None:
            self._forms.close()
            self._forms = None

    # ------------------------------------------------------------------ discovery

    @property
    def ready(self) -> bool:
        """Whether the provider metadata has been loaded."""
        return self._metadata is not None

    @property
    def metadata(self) -> ProviderMetadata:
        """The loaded metadata; ``ProviderUnavailable`` before discovery has succeeded."""
        if self._metadata is None:
            raise ProviderUnavailable("provider metadata not loaded yet")
        return self._metadata

    async def load_metadata(self) -> ProviderMetadata:
        """Fetch and validate the discovery document."""
        url = discovery_url(self.issuer)
        status, doc = await self._get_json(url, "discovery")
        if status != 200:
            raise ProviderUnavailable(f"discovery failed: {url} answered HTTP {status}")
        try:
            metadata = parse_provider_metadata(doc, self.issuer)
        except ProviderUnavailable as e:
            raise ProviderUnavailable(f"discovery failed: the document at {url} is unusable: {e}") from e
        methods = metadata.code_challenge_methods_supported
        if methods and "S256" not in methods:
            LOG.warning("provider does not advertise PKCE S256; sending it anyway")
        if self._metadata is not None and self._metadata.jwks_uri != metadata.jwks_uri:
            # keys of another location: start over
            self._keys = None
            self._keys_fetched_at = None
        self._metadata = metadata
        return metadata

    # ------------------------------------------------------------------ authorization request

    def build_authorize_url(
        self,
        *,
        state: str,
        nonce: str,
        code_challenge: str,
        redirect_uri: str,
        scopes: Sequence[str],
        extra_params: Mapping[str, str] | None = None,
    ) -> str:
        """The authorization endpoint URL for a code + PKCE (S256) login."""
        params = dict(extra_params or {})
        # the protocol parameters go last so that extra_authorize_params can never replace them
        params.update(
            response_type="code",
            client_id=self.client_id,
            redirect_uri=redirect_uri,
            scope=" ".join(scopes),
            state=state,
            nonce=nonce,
            code_challenge=code_challenge,
            code_challenge_method="S256",
        )
        # the endpoint may carry its own query (Core 1.0 section 3.1.2.1 allows it): keep it
        parts = urlsplit(self.metadata.authorization_endpoint)
        query = "&".join(part for part in (parts.query, form_urlencode(params)) if part)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))

    # ------------------------------------------------------------------ token endpoint

    async def exchange_code(self, code: str, redirect_uri: str, code_verifier: str) -> TokenSet:
        """Redeem an authorization code (RFC 6749 section 4.1.3, RFC 7636 section 4.5)."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        }
        return await self._token_request(form, "code exchange")

    async def refresh(
        self, refresh_token: str, *, sub: str, earlier_id_token: str | None, sid: str | None = None
    ) -> TokenSet:
        """Use a refresh token (RFC 6749 section 6); no ``scope``, so the grant's own is kept.

        ``sub``, ``earlier_id_token`` and ``sid`` are the session's: a new ID token in the answer must be
        valid and bound to them (``tokens.verify_refreshed_id_token``), else ``TokenInvalid``.
        When the provider's keys cannot be had (the JWKS is down, or the token names a kid the
        cached set lacks and the refetch is rate-limited or does not bring it), the answer comes
        back without its ID token (the session keeps the one it has) rather than losing the
        rotated refresh token.
        """
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        token_set = await self._token_request(form, "refresh")
        raw = token_set.id_token
        if raw is None:
            return token_set
        issuer = self.metadata.issuer

        earlier = None if earlier_id_token is None else self._claims_of(earlier_id_token)

        def verify(keys: KeySet) -> dict[str, Any]:
            return tokens.verify_refreshed_id_token(
                raw,
                sub=sub,
                earlier=earlier,
                sid=sid,
                keys=keys,
                issuer=issuer,
                client_id=self.client_id,
                allowed_algorithms=self.allowed_algorithms,
                now=self._clock(),
                skew=self.clock_skew,
                access_token=token_set.access_token,
                client_secret=self._client_secret,
            )

        try:
            claims = await self._with_keys(verify)
        except (ProviderUnavailable, UnknownKeyId) as e:
            # an unverified token is not taken, but the grant the provider rotated is kept
            LOG.warning(
                "a refreshed ID token cannot be checked without the provider's keys: the session keeps its own",
                extra={"fields": {"error": str(e)}},
            )
            return replace(token_set, id_token=None)
        # the session's ID token is replaced by this one: keep one entry per session, not per refresh
        if earlier_id_token is not None:
            self._verified.pop(earlier_id_token, None)
        self._remember(raw, claims)
        return token_set

    async def revoke(self, token: str, token_type_hint: str | None = None) -> None:
        """Revoke a token (RFC 7009); does nothing when the provider has no revocation endpoint."""
        endpoint = self.metadata.revocation_endpoint
        if endpoint is None:
            return
        form = {"token": token}
        if token_type_hint:
            form["token_type_hint"] = token_type_hint
        data, headers = self._authenticate(form)
        status, body, _ = await self._post_form(endpoint, "revocation", data, headers)
        # RFC 7009 section 2.2: 200 whatever the token was (an unknown token is not an error)
        if status == 200:
            return
        raise _error_answer(status, body, "revocation")

    async def _token_request(self, form: dict[str, str], what: str) -> TokenSet:
        data, headers = self._authenticate(form)
        status, body, _ = await self._post_form(self.metadata.token_endpoint, what, data, headers)
        if status != 200:
            raise _error_answer(status, body, what)
        now = self._clock()
        token_set = tokens.parse_token_response(_parse_json(body, what), now)
        if not self._lifetime_checked and token_set.expires_at is not None:
            self._lifetime_checked = True  # the first answer with a lifetime tells; once is enough
            lifetime = token_set.expires_at - now
            if self._refresh_before_expiry is not None and refreshes_on_every_request(
                lifetime, self._refresh_before_expiry
            ):
                LOG.warning(
                    "the provider's access tokens live no longer than session.refresh_before_expiry, so every "
                    "request would refresh its session's token; lower session.refresh_before_expiry or give "
                    "access tokens a longer lifetime at the provider",
                    extra={
                        "fields": {
                            "access_token_lifetime_s": round(lifetime),
                            "refresh_before_expiry_s": self._refresh_before_expiry,
                        }
                    },
                )
        return token_set

    def _authenticate(self, form: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """The request body and headers with this client's authentication added."""
        data = dict(form)
        headers: dict[str, str] = {}
        if self.auth_method == "client_secret_basic":
            assert self._basic_credentials is not None
            headers["Authorization"] = self._basic_credentials
        elif self.auth_method == "client_secret_post":
            assert self._client_secret is not None
            data["client_id"] = self.client_id
            data["client_secret"] = self._client_secret
        elif self.auth_method == "private_key_jwt":
            assert self._assertion_key is not None
            data["client_id"] = self.client_id
            data["client_assertion_type"] = tokens.CLIENT_ASSERTION_TYPE
            data["client_assertion"] = tokens.build_client_assertion(
                self._assertion_key,
                client_id=self.client_id,
                audience=self.metadata.token_endpoint,
                now=self._clock(),
            )
        else:
            data["client_id"] = self.client_id
        return data, headers

    # ------------------------------------------------------------------ userinfo

    async def fetch_userinfo(self, access_token: str) -> dict[str, Any]:
        """The UserInfo claims for ``access_token`` (Core 1.0 section 5.3.2, JSON only)."""
        endpoint = self.metadata.userinfo_endpoint
        if endpoint is None:
            raise ProviderUnavailable("provider has no userinfo endpoint")
        headers = {"Authorization": f"Bearer {access_token}"}
        status, body, content_type = await self._request("GET", endpoint, "userinfo", headers=headers)
        if status in (401, 403):
            raise TokenEndpointError("invalid_token", "the userinfo endpoint refused the access token")
        if status != 200:
            raise _error_answer(status, body, "userinfo")
        if content_type == "application/jwt":
            raise ProviderUnavailable("userinfo: signed or encrypted answers are not supported")
        doc = _parse_json(body, "userinfo")
        if not isinstance(doc, dict):
            raise ProviderUnavailable("userinfo: answer is not a JSON object")
        return doc

    # ------------------------------------------------------------------ token verification

    async def verify_id_token(
        self, raw: str, nonce: str, access_token: str | None = None, *, max_age: float | None = None
    ) -> dict[str, Any]:
        """The claims of a valid ID token (``tokens.verify_id_token`` with the cached JWKS)."""
        issuer = self.metadata.issuer

        def verify(keys: KeySet) -> dict[str, Any]:
            return tokens.verify_id_token(
                raw,
                keys=keys,
                issuer=issuer,
                client_id=self.client_id,
                allowed_algorithms=self.allowed_algorithms,
                nonce=nonce,
                now=self._clock(),
                skew=self.clock_skew,
                access_token=access_token,
                client_secret=self._client_secret,
                max_age=max_age,
            )

        claims = await self._with_keys(verify)
        self._remember(raw, dict(claims))
        return claims

    def _remember(self, raw: str, claims: dict[str, Any]) -> None:
        """Keep the claims of ``raw``, an ID token just verified (bounded, oldest out)."""
        verified = self._verified
        verified[raw] = claims
        if len(verified) > VERIFIED_CLAIMS_KEPT:
            verified.popitem(last=False)

    def _claims_of(self, raw: str) -> dict[str, Any]:
        """The claims of a session's ID token, verified when it was stored: kept, or read again."""
        claims = self._verified.get(raw)
        return claims if claims is not None else tokens.unverified_claims(raw)

    async def verify_logout_token(self, raw: str) -> dict[str, Any]:
        """The claims of a valid logout token; the caller checks ``jti`` replay."""
        issuer = self.metadata.issuer

        def verify(keys: KeySet) -> dict[str, Any]:
            return tokens.verify_logout_token(
                raw,
                keys=keys,
                issuer=issuer,
                client_id=self.client_id,
                allowed_algorithms=self.allowed_algorithms,
                now=self._clock(),
                skew=self.clock_skew,
                client_secret=self._client_secret,
            )

        return await self._with_keys(verify)

    async def verify_bearer_token(self, raw: str, audiences: Sequence[str]) -> dict[str, Any]:
        """The claims of a valid JWT access token whose ``aud`` meets ``audiences``."""
        issuer = self.metadata.issuer

        def verify(keys: KeySet) -> dict[str, Any]:
            return tokens.verify_bearer_token(
                raw,
                keys=keys,
                issuer=issuer,
                audiences=audiences,
                allowed_algorithms=self.allowed_algorithms,
                now=self._clock(),
                skew=self.clock_skew,
            )

        return await self._with_keys(verify)

    async def load_keys(self) -> int:
        """Fetch the JWKS now (``check --online``, warm-up at start); the number of usable keys."""
        async with self._keys_lock:
            await self._fetch_keys()
            assert self._keys is not None
            return len(self._keys)

    async def _with_keys(self, verify: Callable[[KeySet], T]) -> T:
        """Run ``verify`` on the cached keys; after ``UnknownKeyId``, refetch once and run it again."""
        keys, generation = self._fresh_keys() or await self._cached_keys()
        try:
            return verify(keys)
        except UnknownKeyId:
            newer = await self._refetch_keys(generation)
            if newer is None:
                raise
            return verify(newer)

    def _fresh_keys(self) -> tuple[KeySet, int] | None:
        """The cached keys while they are fresh (no fetch to consider), else None."""
        keys, loaded_at = self._keys, self._keys_loaded_at
        if keys is not None and loaded_at is not None and self._clock() - loaded_at < JWKS_MAX_AGE:
            return keys, self._keys_generation
        return None

    async def _cached_keys(self) -> tuple[KeySet, int]:
        """The keys when there are none yet (after a fetch) or they are stale (``_fresh_keys``
        said None): a stale set serves at once while one refresh runs in the background, so a
        slow JWKS endpoint delays no verification that the keys at hand can make."""
        if self._keys is not None:
            self._refresh_stale_keys()
            return self._keys, self._keys_generation
        ended = self._keys_attempts_ended
        async with self._keys_lock:
            if self._keys is None:
                # nothing to fall back on: a failure here is the caller's ProviderUnavailable;
                # while the provider is down, requests fail fast instead of queueing on the lock:
                # a fetch that failed while this request waited for the lock was its fetch too
                # (fetching again would keep each waiter a provider.timeout behind the one before)
                last = self._keys_fetched_at
                if self._keys_attempts_ended != ended or (
                    last is not None and self._clock() - last < JWKS_RETRY_WITHOUT_KEYS
                ):
                    raise ProviderUnavailable("JWKS: not available yet")
                await self._fetch_keys()
            assert self._keys is not None
            return self._keys, self._keys_generation

    def _refresh_stale_keys(self) -> None:
        """Start the background refresh of a stale key set, unless one runs or ran too lately."""
        if (self._keys_refresh is None or self._keys_refresh.done()) and self._may_fetch_keys():
            self._keys_refresh = asyncio.get_running_loop().create_task(self._refresh_keys())

    async def _refresh_keys(self) -> None:
        async with self._keys_lock:
            if self._fresh_keys() is not None or not self._may_fetch_keys():
                return  # a refetch for an unknown kid renewed them meanwhile
            try:
                await self._fetch_keys()
            except ProviderUnavailable as e:
                LOG.warning("JWKS refresh failed; keeping the cached keys", extra={"fields": {"error": str(e)}})

    async def keys_refreshed(self) -> None:
        """Wait for a background refresh of stale keys, if one runs."""
        if self._keys_refresh is not None:
            await asyncio.shield(self._keys_refresh)

    async def _refetch_keys(self, seen_generation: int) -> KeySet | None:
        """A newer key set than ``seen_generation``, or None when the rate limit forbids a fetch."""
        ended = self._keys_attempts_ended
        async with self._keys_lock:
            if self._keys_generation != seen_generation:
                # another request refetched while this one waited: use its result
                return self._keys
            if self._keys_attempts_ended != ended:
                # ... or tried to and failed: the same failure, not one more fetch in the queue
                # (a hung endpoint would hold each waiter a provider.timeout longer than the last)
                raise ProviderUnavailable("JWKS: not available")
            if not self._may_fetch_keys():
                return None
            # a failure keeps the last good set and reaches the caller as ProviderUnavailable
            await self._fetch_keys()
            return self._keys

    def _may_fetch_keys(self) -> bool:
        last = self._keys_fetched_at
        return last is None or self._clock() - last >= JWKS_REFETCH_INTERVAL

    async def _fetch_keys(self) -> None:
        """One JWKS fetch (the caller holds the lock); keeps the old set on any failure."""
        self._keys_fetched_at = self._clock()
        self.jwks_fetches += 1
        url = self.metadata.jwks_uri
        try:
            status, doc = await self._get_json(url, "JWKS fetch")
            if status != 200:
                raise ProviderUnavailable(f"JWKS fetch failed: {url} answered HTTP {status}")
            self._keys = KeySet.from_jwks(doc)
            self._keys_loaded_at = self._clock()
            self._keys_generation += 1
        finally:
            self._keys_attempts_ended += 1

    # ------------------------------------------------------------------ HTTP

    async def _get_json(self, url: str, what: str) -> tuple[int, Any]:
        """The status of a GET of ``url`` and, for a 200, its JSON (the callers judge the status)."""
        status, body, _ = await self._request("GET", url, what)
        return status, _parse_json(body, f"{what} from {url}") if status == 200 else None

    async def _request(
        self,
        method: str,
        url: str,
        what: str,
        *,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes, str]:
        """Status, body (bounded) and content type; transport failures become ``ProviderUnavailable``."""
        if self._session is None:
            raise RuntimeError("ProviderClient.start() was not called")
        try:
            async with self._session.request(
                method,
                url,
                data=data,
                headers=headers,
                timeout=self._timeout,
                # credentials travel in POST bodies and Authorization headers: never follow them
                # elsewhere; GETs of public documents may be redirected
                allow_redirects=method == "GET" and headers is None,
            ) as response:
                if self._https_only and any(hop.url.scheme != "https" for hop in (*response.history, response)):
                    # keys or endpoints that crossed the network in clear text could be anyone's
                    raise ProviderUnavailable(f"{what} failed: {url} redirected to a URL that is not https")
                body = await _read_bounded(response, what)
                return response.status, body, response.content_type
        except TimeoutError as e:
            seconds = self._timeout.total
            raise ProviderUnavailable(f"{what} failed: no answer from {url} within {seconds:g}s (timed out)") from e
        except (aiohttp.ClientError, OSError) as e:
            raise ProviderUnavailable(f"{what} failed: {url}: {describe_transport_error(e)}") from e

    async def _post_form(
        self, url: str, what: str, form: Mapping[str, str], headers: Mapping[str, str]
    ) -> tuple[int, bytes, str]:
        """POST ``form`` (urlencoded) to ``url``: status, body (bounded) and content type.

        Never redirected (credentials travel in the body and the Authorization header), and
        never retried (a code or a rotating refresh token must not be sent twice).
        """
        if self._forms is None:
            raise RuntimeError("ProviderClient.start() was not called")
        content = form_urlencode(form).encode("ascii")
        origin, target = _origin_and_target(url)
        fields = {
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded",
            "Content-Length": str(len(content)),
            **headers,
        }
        try:
            async with asyncio.timeout(self._timeout.total):
                response = await self._forms.request(origin, "POST", target, fields, content=content)
                delivered = False
                try:
                    answer = await _read_all(response, what)
                    delivered = True
                finally:
                    response.release(delivered=delivered)
        except TimeoutError as e:
            seconds = self._timeout.total
            raise ProviderUnavailable(f"{what} failed: no answer from {url} within {seconds:g}s (timed out)") from e
        except UpstreamHTTPError as e:
            raise ProviderUnavailable(f"{what} failed: {url}: {describe_exchange_error(e)}") from e
        content_type = (response.field(b"content-type") or "").partition(";")[0].strip().lower()
        return response.status, answer, content_type


@functools.lru_cache(maxsize=64)
def _origin_and_target(url: str) -> tuple[str, str]:
    """The origin and the request target of an endpoint URL (the same few, parsed once)."""
    parsed = URL(url)
    return str(parsed.origin()), parsed.raw_path_qs


def refreshes_on_every_request(access_token_lifetime: float, refresh_before_expiry: float) -> bool:
    """Whether a fresh access token is already due for refresh: each use would refresh it again."""
    return access_token_lifetime <= refresh_before_expiry


# aiohttp 3.11 and later raise a subclass of their own for a failed name lookup
_DNS_ERRORS: Final[tuple[type[BaseException], ...]] = tuple(
    error for error in (getattr(aiohttp, "ClientConnectorDNSError", None),) if isinstance(error, type)
)
_ERRNO_WORDS: Final = {
    errno.ECONNREFUSED: "connection refused (nothing listens at that address and port)",
    errno.ECONNRESET: "the connection was reset",
    errno.EHOSTUNREACH: "the host is unreachable",
    errno.ENETUNREACH: "the network is unreachable",
    errno.ETIMEDOUT: "the connection timed out",
}


_UNTRUSTED: Final = "its TLS certificate is not trusted (for a private CA, set provider.ca_file)"
_NO_ANSWER: Final = "the server closed the connection without answering"


# OpenSSL's X509_V_ERR_* codes whose fix is not provider.ca_file
_CERTIFICATE_PROBLEMS: Final = {
    9: "its TLS certificate is not valid yet",
    10: "its TLS certificate has expired",
    62: "its TLS certificate is for another host name",
}


def _untrusted(cause: BaseException | None) -> str:
    """Why the provider's certificate was refused: expired, another name, or an unknown issuer."""
    return _CERTIFICATE_PROBLEMS.get(getattr(cause, "verify_code", None) or -1, _UNTRUSTED)


def _connect_failure(cause: BaseException | None, *, dns: bool = False) -> str:
    """Why a connection could not be made, from the OS or TLS error underneath."""
    if isinstance(cause, ssl.SSLCertVerificationError):
        return _untrusted(cause)
    if isinstance(cause, ssl.SSLError):
        return "the TLS handshake failed"
    if dns or isinstance(cause, socket.gaierror):
        return "the host name does not resolve"
    return _ERRNO_WORDS.get(getattr(cause, "errno", None) or -1, "cannot connect")


def describe_transport_error(error: BaseException) -> str:
    """Why a request to the provider failed, in words an operator can act on."""
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return _untrusted(error.certificate_error)
    if isinstance(error, aiohttp.ClientSSLError | ssl.SSLError):
        return "the TLS handshake failed"
    if isinstance(error, aiohttp.ClientConnectorError):
        return _connect_failure(error.os_error, dns=isinstance(error, _DNS_ERRORS))
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return _NO_ANSWER
    if isinstance(error, aiohttp.ClientPayloadError):
        return "the answer was cut off"
    if isinstance(error, aiohttp.TooManyRedirects):
        return "too many redirects"
    if isinstance(error, aiohttp.InvalidURL):
        return "not a usable URL"
    if isinstance(error, aiohttp.ClientResponseError):
        return "the answer is not valid HTTP"
    if isinstance(error, OSError) and error.errno in _ERRNO_WORDS:
        return _ERRNO_WORDS[error.errno]
    return "the connection failed"


def describe_exchange_error(error: UpstreamHTTPError) -> str:
    """Why a token or revocation request failed, in the same words as :func:`describe_transport_error`."""
    if isinstance(error, UpstreamConnectError):
        return _connect_failure(error.__cause__)
    if isinstance(error, UpstreamBadResponse):
        return "the answer is not valid HTTP"
    if isinstance(error, UpstreamReset) and error.before_response:
        return _NO_ANSWER
    return "the answer was cut off"


def provider_ssl_context(ca_file: str | None) -> ssl.SSLContext | bool:
    """System trust plus ``ca_file`` (SPEC: an *extra* bundle for a private-CA provider)."""
    if ca_file is None:
        return True
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=ca_file)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError([f"provider.ca_file: cannot load {ca_file}: {e}"]) from e
    return context


class _BoundedAnswer:
    """A provider answer gathered chunk by chunk, refused as soon as it is known to exceed
    ``MAX_ANSWER_BYTES`` (declared or as it arrives)."""

    def __init__(self, declared: int | None, what: str) -> None:
        self._what = what
        if declared is not None and declared > MAX_ANSWER_BYTES:
            self._refuse()
        self._parts: list[bytes] = []
        self._size = 0

    def add(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > MAX_ANSWER_BYTES:
            self._refuse()
        self._parts.append(chunk)

    def body(self) -> bytes:
        parts = self._parts
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _refuse(self) -> None:
        raise ProviderUnavailable(f"{self._what} failed: answer too large")


async def _read_bounded(response: aiohttp.ClientResponse, what: str) -> bytes:
    answer = _BoundedAnswer(response.content_length, what)
    async for chunk in response.content.iter_chunked(64 * 1024):
        answer.add(chunk)
    return answer.body()


async def _read_all(response: UpstreamResponse, what: str) -> bytes:
    """The whole answer of the form client (bounded): a token answer is small and usually in by
    the time its head is, so what is buffered is taken without a wait."""
    length = response.field(b"content-length")
    answer = _BoundedAnswer(int(length) if length and length.isdigit() else None, what)
    while chunk := response.read_nowait() or await response.read():
        answer.add(chunk)
    return answer.body()


def _parse_json(body: bytes, what: str) -> Any:
    try:
        return loads(body)
    except (ValueError, RecursionError) as e:
        raise ProviderUnavailable(f"{what} failed: the answer is not JSON") from e


def _error_answer(status: int, body: bytes, what: str) -> ProviderUnavailable | TokenEndpointError:
    """The exception for a non-200 answer: an OAuth error (RFC 6749 section 5.2) or unavailability."""
    if 400 <= status < 500:
        try:
            doc = loads(body)
        except (ValueError, RecursionError):
            # not JSON (or nested past the parser's depth): not an OAuth error answer
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            description = doc.get("error_description")
            return TokenEndpointError(
                _safe_text(doc["error"], 64), _safe_text(description, 200) if isinstance(description, str) else ""
            )
    return ProviderUnavailable(f"{what} failed: HTTP {status}")


def _safe_text(value: str, limit: int) -> str:
    """Provider-supplied text made fit for logs and pages: printable ASCII, bounded."""
    return "".join(char if 0x20 <= ord(char) < 0x7F else "?" for char in value[:limit])
