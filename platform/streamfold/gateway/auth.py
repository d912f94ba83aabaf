"""Who is calling: API keys or bearer JWTs, each naming a tenant and a principal.

Off by default (the embedded stack). When on, every request but the probes, the metrics and
the docs needs a credential (else 401), checked before the request is routed or its body
read (:class:`~streamfold.gateway.commands.CommandLane`), so that a caller without one learns
nothing of the routes; the caller's tenant and principal come only from the verified
credential:

- ``api_key``: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; keys are
  ``key=tenant:principal`` entries, from the settings or a secret file (one per line,
  ``#`` comments). Keys are compared in constant time.
- ``jwt``: ``Authorization: Bearer <token>``, verified with pyjwt against an HMAC secret or
  a PEM public key; ``exp``/``nbf`` are checked, and ``aud``/``iss`` when configured. The
  tenant is the ``jwt_tenant_claim`` claim, the principal ``sub``.

A tenant a request names (the ``Tenant`` header, a path) may only repeat the credential's,
else 403.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path

import jwt

from streamfold.contracts.results import TENANT_MISMATCH
from streamfold.errors import ConfigurationError
from streamfold.gateway.problems import ProblemError
from streamfold.gateway.settings import AuthMode, GatewaySettings

__all__ = ["Authenticator", "Caller"]


@dataclass(frozen=True, slots=True)
class Caller:
    """A verified caller; with auth off, one with no tenant and no principal."""

    tenant: str | None = None
    principal: str | None = None


_ANONYMOUS = Caller()


def _unauthorised(detail: str) -> ProblemError:
    return ProblemError(
        401,
        "unauthorized",
        "Credentials are required",
        detail,
        headers={"WWW-Authenticate": 'Bearer realm="streamfold"'},
    )


def _parse_keys(text: str, source: str) -> dict[str, Caller]:
    keys: dict[str, Caller] = {}
    for raw in text.replace(",", "\n").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, who = line.partition("=")
        tenant, _, principal = who.partition(":")
        if not sep or not key.strip() or not tenant.strip():
            raise ConfigurationError(f"{source}: API keys are key=tenant:principal entries")
        keys[key.strip()] = Caller(tenant.strip(), principal.strip() or tenant.strip())
    return keys


class Authenticator:
    """Verify a request's credential (see the module docstring)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.mode = settings.auth
        self._keys: dict[str, Caller] = {}
        self._jwt_key: str | bytes | None = None
        self._settings = settings
        if self.mode is AuthMode.API_KEY:
            if settings.api_keys is not None:
                self._keys.update(_parse_keys(settings.api_keys.get_secret_value(), "api_keys"))
            if settings.api_keys_file is not None:
                self._keys.update(_parse_keys(_read(settings.api_keys_file), "api_keys_file"))
            if not self._keys:
                raise ConfigurationError("auth is api_key but no API keys are configured")
        elif self.mode is AuthMode.JWT:
            if settings.jwt_public_key_file is not None:
                self._jwt_key = _read(settings.jwt_public_key_file)
            elif settings.jwt_secret is not None:
                self._jwt_key = settings.jwt_secret.get_secret_value()
            else:
                raise ConfigurationError("auth is jwt but neither jwt_secret nor a key file is set")

    @property
    def enabled(self) -> bool:
        return self.mode is not AuthMode.OFF

    def caller(self, authorization: str | None, api_key: str | None) -> Caller:
        """The caller a request's headers prove; raises a 401 problem."""
        if self.mode is AuthMode.OFF:
            return _ANONYMOUS
        token = api_key
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise _unauthorised("the Authorization header must be 'Bearer <credential>'")
            token = value.strip()
        if not token:
            raise _unauthorised("this gateway needs a credential")
        if self.mode is AuthMode.API_KEY:
            return self._key(token)
        return self._token(token)

    def _key(self, token: str) -> Caller:
        found: Caller | None = None
        for key, caller in self._keys.items():  # every key compared: no early exit timing
            if hmac.compare_digest(key.encode(), token.encode()):
                found = caller
        if found is None:
            raise _unauthorised("unknown API key")
        return found

    def _token(self, token: str) -> Caller:
        settings = self._settings
        assert self._jwt_key is not None
        try:
            claims = jwt.decode(
                token,
                self._jwt_key,
                algorithms=list(settings.jwt_algorithms),
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
                options={"require": ["sub"]},
            )
        except jwt.PyJWTError as exc:
            raise _unauthorised(f"invalid token: {exc}") from exc
        tenant = claims.get(settings.jwt_tenant_claim)
        if not isinstance(tenant, str) or not tenant:
            raise _unauthorised(f"the token has no {settings.jwt_tenant_claim!r} claim")
        return Caller(tenant, str(claims["sub"]))

    @staticmethod
    def check_tenant(caller: Caller, named: str | None) -> None:
        """A tenant the request names must be the caller's (403 otherwise)."""
        if named is None or caller.tenant is None or named == caller.tenant:
            return
        raise ProblemError(
            403,
            "forbidden-tenant",
            "Another tenant's data",
            f"the credential is tenant {caller.tenant!r}, the request names {named!r}",
            code=TENANT_MISMATCH,
        )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from exc
