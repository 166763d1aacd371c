"""The API-key dependency and the error responses the routers declare."""

import secrets
from typing import Optional

from gcl.service.settings import ServiceSettings


def key_dependencies(settings: ServiceSettings) -> list:
    """``[Depends(require_key)]``: the key from ``X-API-Key`` or ``Authorization: Bearer``; 401 when
    missing, 403 when wrong, nothing when ``settings.api_key`` is None."""
    from fastapi import Depends, HTTPException
    from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

    key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the API key (or use Bearer)")
    bearer = HTTPBearer(auto_error=False, description="the API key as a Bearer token")

    def require_key(
        key: Optional[str] = Depends(key_header),
        cred: Optional[HTTPAuthorizationCredentials] = Depends(bearer),
    ) -> None:
        if settings.api_key is None:
            return
        given = key if key is not None else (cred.credentials if cred is not None else None)
        if given is None:
            raise HTTPException(401, "missing API key: send 'X-API-Key: KEY' or 'Authorization: Bearer KEY'",
                                headers={"WWW-Authenticate": "Bearer"})
        if not secrets.compare_digest(given.encode("utf-8", "surrogateescape"), settings.api_key.encode("utf-8")):
            raise HTTPException(403, "wrong API key")

    return [Depends(require_key)]


def error_responses(S, *extra: int) -> dict:
    """The OpenAPI ``responses`` of an authenticated route: 401, 403, 413, 422 and ``extra`` codes."""
    return {code: {"model": S.Error} for code in (401, 403, 413, 422, *extra)}
