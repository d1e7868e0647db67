"""Optional bearer-token authentication (``API_TOKENS_FILE``: one token a line).

The file is re-read when it changes, so a rotated Kubernetes Secret takes effect without a
restart. With no file configured, every route is open.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

_bearer = HTTPBearer(auto_error=False, description="A token from API_TOKENS_FILE, when it is set.")


class TokenStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None
        self._tokens: tuple[str, ...] = ()

    def tokens(self) -> tuple[str, ...]:
        mtime = self.path.stat().st_mtime
        if mtime != self._mtime:
            lines = (line.strip() for line in self.path.read_text().splitlines())
            self._tokens = tuple(line for line in lines if line and not line.startswith("#"))
            self._mtime = mtime
        return self._tokens

    def accepts(self, token: str) -> bool:
        # compare against every token, in constant time per token
        matches = [hmac.compare_digest(token.encode(), known.encode()) for known in self.tokens()]
        return any(matches)


def require_token(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> None:
    store: TokenStore | None = request.app.state.tokens
    if store is None:
        return
    if credentials is None or not store.accepts(credentials.credentials):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
