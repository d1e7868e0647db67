"""Input URIs: validate them (light) and open them as local files (bounded memory).

Schemes: plain paths and ``file://`` (restricted to ``settings.allowed_roots``), ``http(s)://``
(streamed to a temporary file with size and time limits; private and loopback addresses
refused unless ``settings.http_allow_private``), and ``s3://bucket/key`` (boto3, with
``S3_ENDPOINT_URL`` for S3-compatible stores).

:func:`validate_uri` imports nothing heavy: the facade calls it before queueing a request.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urljoin, urlsplit

from audioproc.errors import (
    DownloadError,
    InputNotFoundError,
    PathNotAllowedError,
    UnsupportedURIError,
)

if TYPE_CHECKING:
    from audioproc.settings import PipelineSettings

_REDIRECT_LIMIT = 5


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str


def validate_uri(uri: str, settings: PipelineSettings) -> None:
    """Raise :class:`~audioproc.errors.InputError` if ``uri`` can never be opened here.

    Checks the scheme, that a local path lies under an allowed root, that http(s) URIs
    have a host (and, for literal IP addresses, that private ones are allowed) and that
    s3 URIs name a bucket and a key. Does not touch the network or check that files exist.
    """
    scheme = urlsplit(uri).scheme.lower()
    if scheme in ("", "file"):
        local_path(uri, settings)
    elif scheme in ("http", "https"):
        host = urlsplit(uri).hostname
        if not host:
            raise UnsupportedURIError(uri)
        if _is_ip_literal(host):
            _check_addresses(uri, [host], settings)
    elif scheme == "s3":
        parse_s3_uri(uri)
    else:
        raise UnsupportedURIError(uri)


def local_path(uri: str, settings: PipelineSettings) -> Path:
    """The resolved local path of a plain path or ``file://`` URI, if under an allowed root.

    Symlinks and ``..`` are resolved first, so a link inside a root that points outside
    it is refused.
    """
    parts = urlsplit(uri)
    if parts.scheme.lower() == "file":
        if parts.netloc not in ("", "localhost"):
            raise UnsupportedURIError(uri)
        raw = unquote(parts.path)
    elif parts.scheme == "":
        raw = uri
    else:
        raise UnsupportedURIError(uri)
    path = Path(os.path.realpath(Path(raw).expanduser()))
    roots = [Path(os.path.realpath(root)) for root in settings.allowed_roots]
    if not any(path.is_relative_to(root) for root in roots):
        raise PathNotAllowedError(raw, [str(r) for r in roots])
    return path


def parse_s3_uri(uri: str) -> S3Location:
    parts = urlsplit(uri)
    key = parts.path.lstrip("/")
    if parts.scheme.lower() != "s3" or not parts.netloc or not key:
        raise UnsupportedURIError(uri)
    return S3Location(bucket=parts.netloc, key=key)


@contextmanager
def open_input(uri: str, settings: PipelineSettings) -> Iterator[Path]:
    """A local file with the bytes of ``uri``, for the duration of the ``with`` block.

    Local inputs are used in place; http(s) and s3 inputs are streamed to a temporary
    file (removed afterwards), so memory stays bounded whatever the size.

    Raises:
        InputError: a subclass saying what is wrong (not allowed, not found, download failed).
    """
    validate_uri(uri, settings)
    scheme = urlsplit(uri).scheme.lower()
    if scheme in ("", "file"):
        path = local_path(uri, settings)
        if not path.is_file():
            raise InputNotFoundError(uri, "no such file")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="audioproc-input-") as tmp:
        target = Path(tmp) / (Path(urlsplit(uri).path).name or "input")
        if scheme == "s3":
            _download_s3(uri, target, settings)
        else:
            _download_http(uri, target, settings)
        yield target


# --------------------------------------------------------------------------- http(s)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _check_addresses(uri: str, addresses: list[str], settings: PipelineSettings) -> None:
    if settings.http_allow_private:
        return
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global:
            raise DownloadError(
                f"input {uri!r} resolves to a private or loopback address ({ip}); "
                "such downloads are refused unless HTTP_ALLOW_PRIVATE=true"
            )


def _resolve(uri: str, host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DownloadError(f"input {uri!r}: cannot resolve host {host!r} ({exc})") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _pinned_request(client, url: str, settings: PipelineSettings):  # noqa: ANN001, ANN202 (httpx is imported lazily)
    """A streaming GET of ``url`` connected to an address checked against the private-address rule.

    Every address the host resolves to is checked, then the connection goes to the first
    one (the Host header and TLS SNI keep the name), so DNS cannot swap in another
    address between the check and the connection.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = _resolve(url, host, port)
    _check_addresses(url, addresses, settings)
    ip = addresses[0]
    ip_host = f"[{ip}]" if ":" in ip else ip
    netloc = f"{ip_host}:{parts.port}" if parts.port else ip_host
    pinned = parts._replace(netloc=netloc).geturl()
    headers = {"Host": parts.netloc.rsplit("@", 1)[-1]}
    request = client.build_request("GET", pinned, headers=headers, extensions={"sni_hostname": host})
    return client.send(request, stream=True)


def _download_http(uri: str, target: Path, settings: PipelineSettings) -> None:
    import httpx

    deadline = time.monotonic() + settings.http_timeout_s
    timeout = httpx.Timeout(min(60.0, settings.http_timeout_s))
    url = uri
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        for _ in range(_REDIRECT_LIMIT + 1):
            try:
                response = _pinned_request(client, url, settings)
            except httpx.HTTPError as exc:
                raise DownloadError(f"input {uri!r}: download failed ({exc})") from exc
            try:
                if response.is_redirect:
                    # Follow by hand, so that every hop is checked against the address rules.
                    url = urljoin(url, response.headers["location"])
                    if urlsplit(url).scheme not in ("http", "https"):
                        raise DownloadError(f"input {uri!r} redirects to a non-http URL {url!r}")
                    continue
                _save_response(uri, response, target, settings, deadline)
                return
            finally:
                response.close()
    raise DownloadError(f"input {uri!r}: more than {_REDIRECT_LIMIT} redirects")


def _save_response(uri: str, response, target: Path, settings: PipelineSettings, deadline: float) -> None:  # noqa: ANN001
    import httpx

    if response.status_code == 404:
        raise InputNotFoundError(uri, "HTTP 404")
    if response.status_code >= 400:
        raise DownloadError(f"input {uri!r}: HTTP {response.status_code} {response.reason_phrase}")
    limit = settings.http_max_bytes
    declared = int(response.headers.get("content-length") or 0)
    if declared > limit:
        raise DownloadError(
            f"input {uri!r} is {declared} bytes, over the limit of {limit} bytes (HTTP_MAX_BYTES)"
        )
    received = 0
    try:
        with target.open("wb") as out:
            for chunk in response.iter_bytes():  # as data arrives, so that the deadline is checked often
                received += len(chunk)
                if received > limit:
                    raise DownloadError(
                        f"input {uri!r} is over the limit of {limit} bytes (HTTP_MAX_BYTES)"
                    )
                if time.monotonic() > deadline:
                    raise DownloadError(
                        f"input {uri!r}: download took longer than {settings.http_timeout_s:g} s "
                        "(HTTP_TIMEOUT_S)"
                    )
                out.write(chunk)
    except httpx.HTTPError as exc:
        raise DownloadError(f"input {uri!r}: download failed after {received} bytes ({exc})") from exc


# --------------------------------------------------------------------------- s3


def _download_s3(uri: str, target: Path, settings: PipelineSettings) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    from audioproc.s3 import make_s3_client

    location = parse_s3_uri(uri)
    client = make_s3_client(settings)
    try:
        head = client.head_object(Bucket=location.bucket, Key=location.key)
        if head["ContentLength"] > settings.http_max_bytes:
            raise DownloadError(
                f"input {uri!r} is {head['ContentLength']} bytes, over the limit of "
                f"{settings.http_max_bytes} bytes (HTTP_MAX_BYTES)"
            )
        client.download_file(location.bucket, location.key, str(target))
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
            raise InputNotFoundError(uri, f"S3 {code}") from exc
        raise DownloadError(f"input {uri!r}: S3 error {code} ({exc})") from exc
    except BotoCoreError as exc:
        raise DownloadError(f"input {uri!r}: S3 download failed ({exc})") from exc
