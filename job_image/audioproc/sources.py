"""Input URIs: validate them (light) and open them as local files (bounded memory).

Schemes: plain paths and ``file://`` (restricted to ``settings.allowed_roots``), ``http(s)://``
(streamed to a temporary file with size and time limits; private and loopback addresses
refused unless ``settings.http_allow_private``, including IPv6 forms that embed such an IPv4
address: NAT64, 6to4, Teredo, IPv4-mapped and -compatible), and ``s3://bucket/key`` (boto3,
with ``S3_ENDPOINT_URL`` for S3-compatible stores).

:func:`validate_uri` checks the whole URI up front and raises only ``InputError``; it imports
nothing heavy: the facade calls it before queueing a request.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

from audioproc.errors import (
    DownloadError,
    InputNotFoundError,
    InvalidURIError,
    PathNotAllowedError,
    UnsupportedURIError,
)

if TYPE_CHECKING:
    import httpx  # imported where it is used: validate_uri must stay light

    from audioproc.settings import PipelineSettings

_REDIRECT_LIMIT = 5


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str


@dataclass(frozen=True)
class HttpTarget:
    """The checked parts of an http(s) URL that the download connects to."""

    host: str  # lower-case; an IP literal without brackets, or an ASCII (IDNA) host name
    port: int  # the URL's port, or the scheme's default
    explicit_port: bool
    address: IPv4Address | IPv6Address | None  # the host when it is an IP literal


#: The longest input URI accepted, in characters (the facade's and the AudioJob's limit).
MAX_URI_LENGTH = 2048
#: Longest file name (one path component) in bytes, as on Linux file systems (NAME_MAX).
_MAX_NAME_BYTES = 255
_MAX_S3_KEY_BYTES = 1024
_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_DNS_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_PORT = re.compile(r"[0-9]{1,5}")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def validate_uri(uri: str, settings: PipelineSettings) -> None:
    """Raise :class:`~audioproc.errors.InputError` if ``uri`` can never be opened here.

    Checks the whole URI: its length and characters, the scheme, that a local path lies
    under an allowed root, that an http(s) URL has a valid host (a DNS name or an IP
    literal; literal addresses must not be private ones) and port (1-65535) and no
    credentials, that an s3 URI names a valid bucket and a key. Every problem raises an
    ``InputError`` subclass (:class:`~audioproc.errors.InvalidURIError` for malformed URIs),
    never another exception. Does not touch the network or check that files exist.
    """
    scheme = uri_scheme(uri)
    if scheme in ("", "file"):
        local_path(uri, settings)
    elif scheme in ("http", "https"):
        target = http_target(uri)
        if target.address is not None:
            _check_addresses(uri, [str(target.address)], settings)
    else:
        parse_s3_uri(uri)


def uri_scheme(uri: str) -> str:
    """The lower-case scheme of ``uri`` (``""`` for a plain path), after the checks every URI gets.

    Raises:
        InvalidURIError: not a string, empty, overlong, a non-printable character, urllib
            cannot split it; UnsupportedURIError: a scheme other than file, http(s), s3.
    """
    if not isinstance(uri, str):
        raise InvalidURIError(repr(uri), f"must be a string, not {type(uri).__name__}")
    if not uri:
        raise InvalidURIError(uri, "empty")
    if len(uri) > MAX_URI_LENGTH:
        raise InvalidURIError(
            uri, f"{len(uri)} characters long, over the limit of {MAX_URI_LENGTH}"
        )
    _check_printable(uri, uri, allow_space=True)
    scheme = _split(uri).scheme.lower()
    if scheme not in ("", "file", "http", "https", "s3"):
        raise UnsupportedURIError(uri, f"unsupported scheme {scheme!r}")
    if scheme in ("http", "https", "file"):  # (s3 keys are taken literally, not percent-decoded)
        # A URL carries spaces and backslashes percent-encoded; bare ones are typos or tricks
        # (WHATWG parsers read "\\" as "/", urllib does not: the two would see different hosts).
        for char, name in ((" ", "a space"), ("\\", "a backslash")):
            if char in uri:
                raise InvalidURIError(
                    uri, f"contains {name} at position {uri.index(char)}; percent-encode it"
                )
        bad = _BAD_ESCAPE.search(uri)
        if bad:
            raise InvalidURIError(
                uri, f"malformed percent-escape at position {bad.start()} (use %XX, two hex digits)"
            )
    return scheme


def _split(uri: str) -> SplitResult:
    try:
        return urlsplit(uri)
    except ValueError as exc:  # "Invalid IPv6 URL", NFKC netloc characters
        raise InvalidURIError(uri, str(exc)) from exc


def _check_printable(uri: str, text: str, *, allow_space: bool, where: str = "") -> None:
    """Refuse control, format (e.g. U+202E), surrogate, separator and unassigned characters in ``text``."""
    for position, char in enumerate(text):
        if not (char.isprintable() or (allow_space and char == " ")):
            raise InvalidURIError(
                uri,
                f"contains the non-printable character U+{ord(char):04X} at position {position}{where}",
            )


def _check_name_lengths(uri: str, path: str) -> None:
    for name in path.split("/"):
        if len(name.encode("utf-8")) > _MAX_NAME_BYTES:
            raise InvalidURIError(
                uri, f"a path component is over {_MAX_NAME_BYTES} bytes long ({name[:40]!r}…)"
            )


def local_path(uri: str, settings: PipelineSettings) -> Path:
    """The resolved local path of a plain path or ``file://`` URI, if under an allowed root.

    Symlinks and ``..`` are resolved first, so a link inside a root that points outside
    it is refused.
    """
    scheme = uri_scheme(uri)
    if scheme == "file":
        parts = _split(uri)
        if parts.netloc not in ("", "localhost"):
            raise InvalidURIError(
                uri, f"a file:// URI names a local file (file:///path), not host {parts.netloc!r}"
            )
        if parts.query or parts.fragment or uri.endswith(("?", "#")):
            raise InvalidURIError(
                uri, "a file:// URI has no query or fragment; percent-encode '?' as %3F, '#' as %23"
            )
        try:
            raw = unquote(parts.path, errors="strict")
        except UnicodeDecodeError as exc:
            raise InvalidURIError(uri, "its percent-escapes do not decode to UTF-8") from exc
        _check_printable(uri, raw, allow_space=True, where=" of its decoded path")  # %00, %0A...
    elif scheme == "":
        raw = uri
    else:
        raise UnsupportedURIError(uri, "not a local path or file:// URI")
    if not raw:
        raise InvalidURIError(uri, "no path")
    _check_name_lengths(uri, raw)
    try:
        expanded = Path(raw).expanduser()
    except RuntimeError as exc:  # "~nosuchuser/x.wav"
        raise InvalidURIError(
            uri, f"cannot expand {raw.split('/')[0]!r}: no such user or home directory"
        ) from exc
    path = Path(os.path.realpath(expanded))
    roots = [Path(os.path.realpath(root)) for root in settings.allowed_roots]
    if not any(path.is_relative_to(root) for root in roots):
        raise PathNotAllowedError(raw, [str(r) for r in roots])
    return path


def http_target(url: str) -> HttpTarget:
    """The host and port of an http(s) URL, after checking them; see :func:`validate_uri`.

    Raises:
        InvalidURIError: what is wrong with the URL (no host, credentials, bad port or host).
    """
    scheme = uri_scheme(url)
    if scheme not in _DEFAULT_PORTS:
        raise UnsupportedURIError(url, "not an http:// or https:// URL")
    netloc = _split(url).netloc
    if not netloc:
        raise InvalidURIError(url, "no host")
    if "@" in netloc:
        # Credentials would be stored in manifests and logs; "a@b" also hides the real host.
        raise InvalidURIError(
            url, "credentials (user@host) are not accepted; pass a pre-signed URL instead"
        )
    match = re.fullmatch(r"(?:\[(?P<ip6>[^\]]*)\]|(?P<name>[^:\[\]]*))(?::(?P<port>.*))?", netloc)
    if match is None:
        raise InvalidURIError(url, f"malformed host and port {netloc!r}")
    port = _DEFAULT_PORTS[scheme] if match["port"] is None else _check_port(url, match["port"])
    if match["ip6"] is not None:
        literal = _ipv6_literal(url, match["ip6"])
        return HttpTarget(
            host=str(literal), port=port, explicit_port=match["port"] is not None, address=literal
        )
    host, address = _host_name(url, match["name"])
    return HttpTarget(
        host=host, port=port, explicit_port=match["port"] is not None, address=address
    )


def _check_port(url: str, port: str) -> int:
    if not port:
        raise InvalidURIError(url, "empty port after ':'")
    if not _PORT.fullmatch(port):
        raise InvalidURIError(url, f"port {port!r} is not a number from 1 to 65535")
    number = int(port)
    if not 1 <= number <= 65535:
        raise InvalidURIError(url, f"port {number} is out of range (1 to 65535)")
    return number


def _ipv6_literal(url: str, text: str) -> IPv6Address:
    if "%" in text:
        raise InvalidURIError(url, f"IPv6 zone ids ('%' in [{text}]) are not accepted")
    try:
        return IPv6Address(text)
    except ValueError as exc:
        raise InvalidURIError(url, f"[{text}] is not an IPv6 address ({exc})") from exc


def _host_name(url: str, name: str) -> tuple[str, IPv4Address | None]:
    """(ASCII host, its IPv4 address when it is a dotted-quad literal) for a host that is not in brackets."""
    if not name:
        raise InvalidURIError(url, "no host")
    if "%" in name:
        raise InvalidURIError(url, f"percent-encoded host names are not accepted ({name!r})")
    try:
        return name, IPv4Address(name)
    except ValueError:
        pass
    try:
        socket.inet_aton(name)
    except OSError:
        pass
    else:  # the C resolver reads "0x7f.1", "2130706433" or "0177.0.0.1" as an IPv4 address
        raise InvalidURIError(
            url, f"host {name!r} is an ambiguous IPv4 form (octal, hex or short); write a.b.c.d"
        )
    try:
        ascii_name = name.lower() if name.isascii() else name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise InvalidURIError(url, f"host {name!r} is not a valid domain name ({exc})") from exc
    labels = ascii_name.removesuffix(".").split(".")
    if len(ascii_name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise InvalidURIError(
            url, f"host {name!r} is not a valid domain name (labels of 1-63 letters, digits or '-')"
        )
    if labels[-1].isdigit():
        raise InvalidURIError(
            url, f"host {name!r} is neither an IPv4 address (a.b.c.d) nor a domain name"
        )
    return ascii_name, None


def parse_s3_uri(uri: str) -> S3Location:
    """Bucket and key of ``s3://bucket/key``; the key is everything after the bucket's '/', as is."""
    if uri_scheme(uri) != "s3":
        raise UnsupportedURIError(uri, "not an s3:// URI")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if "@" in bucket or ":" in bucket:
        raise InvalidURIError(
            uri, "an s3:// URI names a bucket only (no credentials, no port; see S3_ENDPOINT_URL)"
        )
    if not _S3_BUCKET.fullmatch(bucket):
        raise InvalidURIError(
            uri, f"{bucket!r} is not an S3 bucket name (3-63 lower-case letters, digits, '.', '-')"
        )
    if not key:
        raise InvalidURIError(uri, "no object key: use s3://bucket/key")
    if len(key.encode("utf-8")) > _MAX_S3_KEY_BYTES:
        raise InvalidURIError(uri, f"the object key is over {_MAX_S3_KEY_BYTES} bytes long")
    return S3Location(bucket=bucket, key=key)


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
        try:
            is_file = path.is_file()
        except OSError as exc:  # a name too long for this file system, a loop of links...
            raise InputNotFoundError(uri, str(exc)) from exc
        if not is_file:
            raise InputNotFoundError(uri, "no such file")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="audioproc-input-") as tmp:
        target = Path(tmp) / _download_name(uri)
        if scheme == "s3":
            _download_s3(uri, target, settings)
        else:
            _download_http(uri, target, settings)
        yield target


def _download_name(uri: str) -> str:
    """``input`` plus the URI's file extension (a hint for FFmpeg), whatever the URI's file name is."""
    suffix = Path(urlsplit(uri).path).suffix
    return "input" + (suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,10}", suffix) else "")


# --------------------------------------------------------------------------- http(s)


#: IPv6 prefixes whose addresses carry an IPv4 address in their low 32 bits (RFC 4291, 6052, 6145).
_IPV4_IN_LOW_BITS = {
    "IPv4-compatible": ipaddress.ip_network("::/96"),
    "IPv4-mapped": ipaddress.ip_network("::ffff:0:0/96"),
    "IPv4-translated": ipaddress.ip_network("::ffff:0:0:0/96"),
    "NAT64": ipaddress.ip_network("64:ff9b::/96"),
}
#: Local-use NAT64 (RFC 8215): the operator picks where the IPv4 address sits, and the prefix
#: is not global by definition, so every address in it is refused.
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")


def embedded_ipv4(ip: IPv4Address | IPv6Address) -> list[tuple[str, IPv4Address]]:
    """The IPv4 addresses an IPv6 address embeds, with the name of the form, e.g. ``("6to4", 10.0.0.1)``.

    A packet to such an address reaches (or is translated to) the embedded IPv4 host, so
    the private-address rule applies to it as well. Teredo embeds two: the server and the
    client (stored bit-inverted, "obfuscated"; ``ipaddress`` inverts it back).
    """
    if isinstance(ip, IPv4Address):
        return []
    found = [
        (form, IPv4Address(int(ip) & 0xFFFFFFFF))
        for form, net in _IPV4_IN_LOW_BITS.items()
        if ip in net
    ]
    six_to_four = ip.sixtofour  # None unless in 2002::/16
    if six_to_four is not None:
        found.append(("6to4", six_to_four))
    teredo = ip.teredo  # None unless in 2001::/32
    if teredo is not None:
        server, client = teredo
        found += [("Teredo server", server), ("Teredo client", client)]
    return found


def refusal_reason(ip: IPv4Address | IPv6Address) -> str | None:
    """Why a download from ``ip`` is refused (private, loopback, link-local, ... itself or embedded), or None.

    ``is_global`` alone is not enough: ``ipaddress`` calls NAT64, 6to4 and IPv4-compatible
    addresses global whatever IPv4 address they embed, and calls multicast addresses global.
    """
    if ip in _LOCAL_NAT64:
        return f"{ip} (local-use NAT64 prefix 64:ff9b:1::/48)"
    embedded = embedded_ipv4(ip)
    if not embedded:
        return None if _is_public(ip) else str(ip)
    # The packet goes to the embedded IPv4 host(s): judge them, not the wrapper (``ipaddress``
    # calls ::/8, where NAT64 and the mapped forms live, "reserved").
    for form, v4 in embedded:
        if not _is_public(v4):
            return f"{ip}, whose {form} address is {v4}"
    return None


def _is_public(ip: IPv4Address | IPv6Address) -> bool:
    return ip.is_global and not (ip.is_multicast or ip.is_unspecified or ip.is_reserved)


def _check_addresses(uri: str, addresses: list[str], settings: PipelineSettings) -> None:
    if settings.http_allow_private:
        return
    for address in addresses:
        reason = refusal_reason(ipaddress.ip_address(address.split("%")[0]))
        if reason is not None:
            raise DownloadError(
                f"input {uri!r} resolves to a private or loopback address ({reason}); "
                "such downloads are refused unless HTTP_ALLOW_PRIVATE=true"
            )


def _resolve(uri: str, host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DownloadError(f"input {uri!r}: cannot resolve host {host!r} ({exc})") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _pinned_request(client: httpx.Client, url: str, settings: PipelineSettings) -> httpx.Response:
    """A streaming GET of ``url`` connected to an address checked against the private-address rule.

    Every address the host resolves to is checked, then the connection goes to the first
    one (the Host header and TLS SNI keep the name), so DNS cannot swap in another
    address between the check and the connection.
    """
    target = http_target(url)
    addresses = _resolve(url, target.host, target.port)
    _check_addresses(url, addresses, settings)
    port_suffix = f":{target.port}" if target.explicit_port else ""
    pinned = urlsplit(url)._replace(netloc=_bracketed(addresses[0]) + port_suffix).geturl()
    headers = {"Host": _bracketed(target.host) + port_suffix}
    request = client.build_request(
        "GET", pinned, headers=headers, extensions={"sni_hostname": target.host}
    )
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
            except InvalidURIError as exc:  # a redirect's target (the first URL was validated)
                raise DownloadError(f"input {uri!r} redirects to an invalid URL: {exc}") from exc
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise DownloadError(f"input {uri!r}: download failed ({exc})") from exc
            try:
                if response.is_redirect:
                    # Follow by hand, so that every hop is checked against the address rules.
                    url = _redirect_target(uri, url, response.headers.get("location", ""))
                    continue
                _save_response(uri, response, target, settings, deadline)
                return
            finally:
                response.close()
    raise DownloadError(f"input {uri!r}: more than {_REDIRECT_LIMIT} redirects")


def _redirect_target(uri: str, url: str, location: str) -> str:
    """The absolute URL a redirect from ``url`` points to; checked in full by the next hop."""
    try:
        target = urljoin(url, location)
        scheme = urlsplit(target).scheme.lower()
    except ValueError as exc:
        raise DownloadError(
            f"input {uri!r} redirects to a malformed URL {location!r} ({exc})"
        ) from exc
    if scheme not in ("http", "https"):
        raise DownloadError(f"input {uri!r} redirects to a non-http URL {target!r}")
    return target


def _save_response(
    uri: str, response: httpx.Response, target: Path, settings: PipelineSettings, deadline: float
) -> None:
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
            for (
                chunk
            ) in response.iter_bytes():  # as data arrives, so that the deadline is checked often
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
        raise DownloadError(
            f"input {uri!r}: download failed after {received} bytes ({exc})"
        ) from exc


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
