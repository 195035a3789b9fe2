"""Optional Cloudflare Access check (defence in depth; Cloudflare Access itself authenticates at the edge).

Cloudflare adds `Cf-Access-Jwt-Assertion`, an RS256 JWT whose `aud` is the Access application's AUD tag, signed by
keys published at https://<team>.cloudflareaccess.com/cdn-cgi/access/certs; Cloudflare recommends validating it at
the origin (https://developers.cloudflare.com/cloudflare-one/identity/authorization-cookie/validating-json/).
Keys are fetched with the service's pooled session (http_client.py) and cached for CF_ACCESS_JWKS_TTL; an unknown
`kid` (key rotation) triggers a refetch, at most once per REFETCH_INTERVAL so random kids cannot hammer the certs
URL.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import jwt

REFETCH_INTERVAL = 10.0
FETCH_TIMEOUT = aiohttp.ClientTimeout(total=5.0)


class AuthError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class AccessVerifier:
    def __init__(self, audience: str, certs_url: str, ttl: float) -> None:
        self.audience = audience
        self.certs_url = certs_url
        self.ttl = ttl
        self.session: aiohttp.ClientSession | None = None  # the app's pooled session, set in the lifespan
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def verify(self, token: str | None) -> dict:
        if not token:
            raise AuthError(401, "missing Cf-Access-Jwt-Assertion header")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError(403, "malformed Access token") from None
        if header.get("alg") != "RS256":
            raise AuthError(403, "Access token must be signed with RS256")
        key = await self._key(header.get("kid"))
        try:
            return jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                audience=self.audience,
                options={"require": ["exp", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(403, "Access token expired") from None
        except jwt.InvalidAudienceError:
            raise AuthError(403, "Access token is for another application (aud)") from None
        except jwt.PyJWTError as exc:
            raise AuthError(403, f"invalid Access token: {exc}") from None

    async def _key(self, kid: str | None) -> jwt.PyJWK:
        now = time.monotonic()
        stale = now - self._fetched_at > self.ttl
        # With no key at all (certs URL was down) retry sooner, still serialised by the lock.
        interval = REFETCH_INTERVAL if self._keys else 1.0
        if stale or (kid not in self._keys and now - self._fetched_at > interval):
            async with self._lock:
                if self._fetched_at < now:  # nobody refreshed while we waited
                    await self._fetch()
        key = self._keys.get(kid)
        if key is None:
            raise AuthError(403, "Access token signed by an unknown key")
        return key

    async def _fetch(self) -> None:
        assert self.session is not None
        try:
            async with self.session.get(self.certs_url, timeout=FETCH_TIMEOUT, allow_redirects=False) as resp:
                resp.raise_for_status()
                keyset = jwt.PyJWKSet.from_dict(await resp.json(content_type=None))
        except (aiohttp.ClientError, TimeoutError, ValueError, jwt.PyJWTError) as exc:
            if not self._keys:
                raise AuthError(503, f"cannot fetch Access keys from {self.certs_url}: {exc}") from None
            return  # keep serving with the keys we have; retry after REFETCH_INTERVAL
        finally:
            self._fetched_at = time.monotonic()
        self._keys = {k.key_id: k for k in keyset.keys}
