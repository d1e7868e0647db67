"""Optional bearer-token authentication and per-token scopes (``API_TOKENS_FILE``).

The tokens file has one entry a line (blank lines and ``#`` comments are skipped):

    shared-token              a token of the shared tenant (no name)
    alice:alice-token         the token of tenant "alice"
    ops:ops-token:admin       an admin token: sees and cancels every task

A named token sees, reads and cancels only the tasks it submitted; the tasks record its name as
their ``submitter``. Plain (unnamed) tokens form one shared tenant: their tasks have no
submitter, and they see exactly the tasks without one. A name may have several tokens (for
rotation); a token may appear only once. With no file configured every route is open and every
caller acts as admin.

The file is re-read when it changes (a rotated Kubernetes Secret takes effect without a
restart). Start-up refuses a file that cannot be read or parsed (``load``); at run time a file
that becomes unreadable or invalid keeps the last good set of tokens, and ``problem`` says why
(``/readyz`` reports it as not ready).
"""

from __future__ import annotations

import hmac
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

_bearer = HTTPBearer(auto_error=False, description="A token from API_TOKENS_FILE, when it is set.")

#: The admin marker: the third field of a ``name:token:admin`` line.
ADMIN_MARKER = "admin"
#: Token names end up in a Kubernetes label value: at most 63 characters, alphanumeric at both
#: ends, ``-_.`` inside.
NAME_PATTERN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?")
#: A token is any run of visible ASCII but ':' (the field separator).
TOKEN_PATTERN = re.compile(r"[!-9;-~]+")


@dataclass(frozen=True)
class Caller:
    """Who is calling: the token's ``name`` (None: the shared tenant, or tokens off) and scope."""

    name: str | None
    admin: bool = False

    def may_see(self, submitter: str | None) -> bool:
        """Whether a task submitted by ``submitter`` is visible to this caller."""
        return self.admin or submitter == self.name


#: Every caller when no tokens file is configured.
OPEN_ACCESS = Caller(name=None, admin=True)


class TokensFileError(ValueError):
    """The tokens file cannot be read or is not valid; the message is one line."""


def parse_tokens(text: str) -> dict[str, Caller]:
    """The callers of a tokens file's ``text``, by token. Raises TokensFileError (naming the line)."""
    callers: dict[str, Caller] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        token, caller = _parse_line(line, number)
        if token in callers:
            raise TokensFileError(f"line {number}: this token is already listed on an earlier line")
        callers[token] = caller
    return callers


def _parse_line(line: str, number: int) -> tuple[str, Caller]:
    fields = line.split(":")
    if len(fields) > 3:
        raise TokensFileError(
            f"line {number}: expected 'token', 'name:token' or 'name:token:{ADMIN_MARKER}'"
        )
    if len(fields) == 1:
        name, token, marker = None, fields[0], None
    else:
        name, token, marker = fields[0], fields[1], fields[2] if len(fields) == 3 else None
    if name is not None and not NAME_PATTERN.fullmatch(name):
        raise TokensFileError(
            f"line {number}: a token name is 1-63 letters, digits, '-', '_' or '.', starting and ending "
            "with a letter or digit"
        )
    if not TOKEN_PATTERN.fullmatch(token):
        raise TokensFileError(
            f"line {number}: a token is one or more visible ASCII characters other than ':'"
        )
    if marker is not None and marker != ADMIN_MARKER:
        raise TokensFileError(
            f"line {number}: the third field may only be '{ADMIN_MARKER}', not {marker!r}"
        )
    return token, Caller(name=name, admin=marker == ADMIN_MARKER)


def _signature(stat: os.stat_result) -> tuple[int, ...]:
    # ctime too: a chmod that makes the file unreadable changes it, the mtime does not
    return stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


class TokenStore:
    """The tokens of ``path``, re-read when the file changes, the last good set kept."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature: tuple[int, ...] | None = None
        self._callers: dict[str, Caller] = {}
        self._problem: str | None = None

    def load(self) -> None:
        """Read the file now; raise TokensFileError if it cannot be read or parsed (start-up)."""
        self.refresh()
        if self._problem is not None:
            raise TokensFileError(self._problem)

    def refresh(self) -> None:
        """Re-read the file if it changed since the last attempt; keep the last good set on failure."""
        try:
            signature = _signature(self.path.stat())
            if signature == self._signature:
                return
            self._signature = signature
            self._callers = parse_tokens(self.path.read_text(encoding="utf-8"))
            self._problem = None
        except (OSError, UnicodeDecodeError) as exc:
            self._signature = None  # try again on the next request
            self._problem = (
                f"API_TOKENS_FILE {self.path} cannot be read: {type(exc).__name__}: {exc}"
            )
        except TokensFileError as exc:
            self._problem = f"API_TOKENS_FILE {self.path} is invalid: {exc}"

    @property
    def problem(self) -> str | None:
        """Why the current file is not in use (the last good tokens are), or None."""
        self.refresh()
        return self._problem

    def caller_for(self, token: str) -> Caller | None:
        """The caller owning ``token``, or None. Compares with every known token, in constant
        time per token, so the time taken does not say how much of a token matched."""
        self.refresh()
        found = None
        for known, caller in self._callers.items():
            if hmac.compare_digest(token.encode(), known.encode()):
                found = caller
        return found


async def require_token(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Caller:
    """The caller of this request (401 without a known token, when tokens are on)."""
    store: TokenStore | None = request.app.state.tokens
    if store is None:
        return OPEN_ACCESS
    caller = store.caller_for(credentials.credentials) if credentials is not None else None
    if caller is None:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return caller


CallerDep = Annotated[Caller, Depends(require_token)]
