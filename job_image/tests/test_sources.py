"""Input URIs: allowed roots, http(s) against a loopback server, private-address refusal."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as settings_profile
from hypothesis import strategies as st

from audioproc.errors import (
    DownloadError,
    InputError,
    InputNotFoundError,
    InvalidURIError,
    PathNotAllowedError,
    UnsupportedURIError,
)
from audioproc.settings import PipelineSettings
from audioproc.sources import embedded_ipv4, open_input, refusal_reason, validate_uri

# --------------------------------------------------------------------------- local


def test_local_path_inside_allowed_root_is_used_in_place(
    media: Path, settings: PipelineSettings
) -> None:
    with open_input(str(media / "tone.wav"), settings) as path:
        assert path == (media / "tone.wav").resolve()


def test_file_uri(media: Path, settings: PipelineSettings) -> None:
    with open_input((media / "tone.mp4").as_uri(), settings) as path:
        assert path.read_bytes() == (media / "tone.mp4").read_bytes()


def test_path_outside_allowed_roots(settings: PipelineSettings) -> None:
    with pytest.raises(
        PathNotAllowedError, match="outside the allowed roots .* add its directory to ALLOWED_ROOTS"
    ):
        validate_uri("/etc/passwd", settings)


def test_dotdot_and_symlinks_cannot_escape_a_root(media: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "escape.mp4").symlink_to(media / "tone.mp4")
    settings = PipelineSettings(allowed_roots=[root])
    for uri in (str(root / "escape.mp4"), str(root / ".." / "root" / ".." / "x.mp4")):
        with pytest.raises(PathNotAllowedError):
            validate_uri(uri, settings)


def test_missing_local_file(settings: PipelineSettings, tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="not found: no such file"):
        with open_input(str(tmp_path / "missing.mp4"), settings):
            pass


@pytest.mark.parametrize(
    "uri", ["ftp://host/x.mp4", "gs://bucket/x.mp4", "HTTPX://host/x", "javascript:alert(1)"]
)
def test_unsupported_uris(uri: str, settings: PipelineSettings) -> None:
    with pytest.raises(
        UnsupportedURIError,
        match="unsupported scheme .* use a local path, file://, http://, https:// or s3://bucket/key",
    ):
        validate_uri(uri, settings)


def test_literal_private_ip_refused_by_validate(settings: PipelineSettings) -> None:
    for uri in (
        "http://127.0.0.1/x.mp4",
        "http://10.0.0.8/x.mp4",
        "http://[::1]/x.mp4",
        "http://169.254.169.254/",
    ):
        with pytest.raises(
            DownloadError, match="private or loopback address .* HTTP_ALLOW_PRIVATE=true"
        ):
            validate_uri(uri, settings)


# --------------------------------------------------------------------------- malformed URIs

#: (URI, what the message must say). Each is refused by validate_uri with InvalidURIError.
MALFORMED_URIS = [
    # ports
    ("http://localhost:99999/x.wav", "port 99999 is out of range"),
    ("http://localhost:65536/x.wav", "port 65536 is out of range"),
    ("http://localhost:0/x.wav", "port 0 is out of range"),
    ("http://localhost:abc/x.wav", "port 'abc' is not a number"),
    ("http://localhost:+80/x.wav", "port '\\+80' is not a number"),
    ("http://localhost:-1/x.wav", "port '-1' is not a number"),
    ("http://localhost:8_0/x.wav", "port '8_0' is not a number"),
    ("http://localhost:\u0668\u0660/x.wav", "port '.*' is not a number"),  # Arabic-Indic digits
    ("https://example.com:/x.wav", "empty port"),
    ("http://example.com:80:80/x.wav", "port '80:80' is not a number"),
    # hosts
    ("https:///nohost", "no host"),
    ("http://:8080/x.wav", "no host"),
    ("http://ex..com/x.wav", "not a valid domain name"),
    ("http://-ex.com/x.wav", "not a valid domain name"),
    ("http://" + "a" * 64 + ".com/x.wav", "not a valid domain name"),
    ("http://ex_ample!.com/x.wav", "not a valid domain name"),
    ("http://1.2.3.4.5/x.wav", "neither an IPv4 address"),
    ("http://256.1.1.1/x.wav", "neither an IPv4 address"),
    ("http://127.1/x.wav", "ambiguous IPv4 form"),
    ("http://2130706433/x.wav", "ambiguous IPv4 form"),
    ("http://0x7f000001/x.wav", "ambiguous IPv4 form"),
    ("http://0177.0.0.1/x.wav", "ambiguous IPv4 form"),
    ("http://%6c%6fcalhost/x.wav", "percent-encoded host"),
    # userinfo tricks
    ("http://user:pass@example.com/x.wav", "credentials"),
    ("http://example.com@127.0.0.1/x.wav", "credentials"),
    ("http://127.0.0.1:80@example.com/x.wav", "credentials"),
    ("http://a@b@example.com/x.wav", "credentials"),
    ("http://example.com\\@127.0.0.1/x.wav", "backslash"),
    ("s3://key:secret@bucket/x.wav", "names a bucket only"),
    # IPv6 literal forms
    ("http://[::1/x.wav", "Invalid IPv6 URL"),
    ("http://::1/x.wav", "not a number"),
    ("http://[1.2.3.4]/x.wav", "IPv4 address cannot be in brackets"),
    ("http://[v1.abc]/x.wav", "not.* IPv6 address"),
    ("http://[::g]/x.wav", "not.* IPv6 address"),
    ("http://[1:2:3:4:5:6:7:8:9]/x.wav", "not.* IPv6 address"),
    ("http://[fe80::1%25eth0]/x.wav", "zone ids"),
    ("http://[::1]x/x.wav", "malformed host and port"),
    # schemes and shapes
    ("s3://bucket-only", "no object key"),
    ("s3://bucket/", "no object key"),
    ("s3://Bad_Bucket/x.wav", "not an S3 bucket name"),
    ("s3://ab/x.wav", "not an S3 bucket name"),
    ("s3:///x.wav", "not an S3 bucket name"),
    ("s3://bucket:9000/x.wav", "names a bucket only"),
    ("file://otherhost/x.mp4", "names a local file"),
    ("file:///x.wav?v=1", "no query or fragment"),
    ("file:///x.wav#t=1", "no query or fragment"),
    ("file://", "no path"),
    # percent-encoding
    ("http://example.com/%zz.wav", "malformed percent-escape at position 19"),
    ("http://example.com/x.wav%", "malformed percent-escape"),
    ("file:///tmp/a%00b.wav", "U\\+0000 at position 6 of its decoded path"),
    ("file:///tmp/a%0Ab.wav", "U\\+000A"),
    ("file:///tmp/%ff.wav", "do not decode to UTF-8"),
    # whitespace and control characters
    ("http://example.com/a b.wav", "contains a space at position 20"),
    (" http://example.com/x.wav", "contains a space"),
    ("http://example.com/x.wav\n", "U\\+000A"),
    ("http://example.com/\tx.wav", "U\\+0009"),
    ("/tmp/x\x00.wav", "U\\+0000 at position 6"),
    ("/tmp/x\r.wav", "U\\+000D"),
    ("/tmp/x\u202egnp.wav", "U\\+202E"),  # right-to-left override
    ("/tmp/x\u2028.wav", "U\\+2028"),
    ("/tmp/\ud800.wav", "U\\+D800"),  # a lone surrogate cannot be a file name
    ("http://exa\u200bmple.com/x.wav", "U\\+200B"),  # zero-width space
    ("~no-such-user-here/x.wav", "cannot expand '~no-such-user-here': no such user"),
    # empty and overlong
    ("", "empty"),
    ("http://example.com/" + "a" * 2048, "over the limit of 2048"),
    ("/tmp/" + "a" * 256 + ".wav", "path component is over 255 bytes"),
    ("s3://bucket/" + "k" * 1025, "object key is over 1024 bytes"),
]


@pytest.mark.parametrize(("uri", "problem"), MALFORMED_URIS)
def test_malformed_uris_are_refused_saying_what_is_wrong(
    uri: str, problem: str, settings: PipelineSettings
) -> None:
    with pytest.raises(InvalidURIError, match=f"invalid input URI .*{problem}"):
        validate_uri(uri, settings)


@pytest.mark.parametrize(
    "uri",
    [
        "http://example.com/x.wav",
        "https://example.com:8443/a/b.mp3?sig=abc%2Fdef&x=1#t=3",
        "http://EXAMPLE.com./x",
        "http://8.8.8.8/x.wav",
        "http://[2606:4700::1111]:8080/x.wav",
        "https://b\u00fccher.de/x.mp3",
        "s3://bucket/a/b c?d#e 100%.wav",
        "s3://my.bucket-1/key",
        "HTTP://example.com/x",
    ],
)
def test_well_formed_remote_uris_pass(uri: str, settings: PipelineSettings) -> None:
    validate_uri(uri, settings)


def test_well_formed_local_uris_pass(media: Path, settings: PipelineSettings) -> None:
    for uri in (
        str(media / "tone.wav"),
        (media / "tone.wav").as_uri(),
        f"file://localhost{media}/tone.wav",
        str(media / "My Clip (1).wav"),
        (media / "My Clip #1.wav").as_uri(),
    ):
        validate_uri(uri, settings)


def test_a_malformed_redirect_target_is_a_download_error(
    http_server: str, private_ok: PipelineSettings
) -> None:
    with pytest.raises(
        DownloadError, match="redirects to an invalid URL.*port 99999 is out of range"
    ):
        with open_input(f"{http_server}/bad-port-redirect", private_ok):
            pass


_URLISH = st.builds(
    "".join,
    st.lists(
        st.one_of(
            st.sampled_from(
                [
                    "http://",
                    "https://",
                    "s3://",
                    "file://",
                    "file:///",
                    "ftp://",
                    "//",
                    "/",
                    "@",
                    ":",
                    "[",
                    "]",
                    "%",
                    "%2",
                    "%41",
                    "%00",
                    "?",
                    "#",
                    "..",
                    ".",
                    "\\",
                    "::1",
                    "::ffff:",
                    "127.0.0.1",
                    "0x7f",
                    "localhost",
                    "example.com",
                    ":99999",
                    ":0",
                    ":80",
                    "~",
                    " ",
                    "\n",
                    "\x00",
                    "\u202e",
                ]
            ),
            st.text(max_size=8),
        ),
        max_size=10,
    ),
)


@settings_profile(max_examples=300, deadline=None)
@given(uri=st.one_of(st.text(max_size=64), _URLISH))
def test_validate_uri_raises_only_input_errors(uri: str) -> None:
    # Hypothesis drives the arguments, so the settings are built here rather than from a fixture.
    pipeline_settings = PipelineSettings(allowed_roots=["/tmp"], http_allow_private=False)
    try:
        validate_uri(uri, pipeline_settings)
    except InputError as exc:
        assert str(exc)  # a message that says something


# --------------------------------------------------------------------------- SSRF: every address family

#: (address, refused?). Embedded IPv4 addresses are decoded: private ones are refused in every form.
ADDRESSES = [
    # IPv4
    ("8.8.8.8", False),
    ("1.1.1.1", False),
    ("127.0.0.1", True),
    ("10.1.2.3", True),
    ("172.16.0.1", True),
    ("192.168.1.1", True),
    ("169.254.169.254", True),
    ("100.64.0.1", True),
    ("0.0.0.0", True),
    ("255.255.255.255", True),
    ("224.0.0.1", True),
    ("239.255.255.250", True),
    ("240.0.0.1", True),
    ("192.0.2.1", True),
    ("198.18.0.1", True),
    # IPv6 native
    ("2606:4700::1111", False),
    ("::1", True),
    ("::", True),
    ("fe80::1", True),
    ("fc00::1", True),
    ("fd12:3456::1", True),
    ("ff02::1", True),
    ("2001:db8::1", True),
    # IPv4-mapped ::ffff:a.b.c.d
    ("::ffff:8.8.8.8", False),
    ("::ffff:127.0.0.1", True),
    ("::ffff:10.0.0.1", True),
    ("::ffff:169.254.169.254", True),
    # IPv4-compatible ::a.b.c.d (deprecated)
    ("::127.0.0.1", True),
    ("::10.0.0.1", True),
    ("::169.254.169.254", True),
    ("::192.168.0.1", True),
    # IPv4-translated ::ffff:0:a.b.c.d
    ("::ffff:0:127.0.0.1", True),
    ("::ffff:0:10.0.0.1", True),
    # NAT64 well-known prefix 64:ff9b::/96
    ("64:ff9b::8.8.8.8", False),
    ("64:ff9b::127.0.0.1", True),
    ("64:ff9b::10.0.0.1", True),
    ("64:ff9b::169.254.169.254", True),
    ("64:ff9b::192.168.1.1", True),
    # local-use NAT64 64:ff9b:1::/48: refused whatever it embeds
    ("64:ff9b:1::8.8.8.8", True),
    ("64:ff9b:1:7f00:1::", True),
    # 6to4 2002:AABB:CCDD::/48
    ("2002:0808:0808::1", False),
    ("2002:7f00:0001::1", True),
    ("2002:0a00:0001::", True),
    ("2002:a9fe:a9fe::1", True),
    ("2002:c0a8:0101:1::1", True),
    # Teredo 2001:0:SERVER:flags:port:~CLIENT (client bit-inverted)
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", True),  # client 127.0.0.1
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", True),  # client 10.0.0.1
    ("2001:0:0a00:0001:8000:63bf:f7f7:f7f7", True),  # server 10.0.0.1
    ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", False),  # server 65.54.227.120, client 8.8.8.8
]


@pytest.mark.parametrize(("address", "refused"), ADDRESSES)
def test_private_addresses_are_refused_in_every_form(
    address: str, refused: bool, settings: PipelineSettings
) -> None:
    uri = f"http://[{address}]/x.wav" if ":" in address else f"http://{address}/x.wav"
    if refused:
        with pytest.raises(DownloadError, match="private or loopback address"):
            validate_uri(uri, settings)
    else:
        validate_uri(uri, settings)
    # The same rule applies to what a host name resolves to (the download path).
    assert (refusal_reason(ipaddress.ip_address(address)) is not None) is refused


def test_embedded_addresses_are_decoded() -> None:
    assert embedded_ipv4(ipaddress.ip_address("2002:7f00:1::")) == [
        ("6to4", ipaddress.ip_address("127.0.0.1"))
    ]
    assert ("Teredo client", ipaddress.ip_address("127.0.0.1")) in embedded_ipv4(
        ipaddress.ip_address("2001:0:4136:e378:8000:63bf:80ff:fffe")
    )
    assert embedded_ipv4(ipaddress.ip_address("64:ff9b::a00:1")) == [
        ("NAT64", ipaddress.ip_address("10.0.0.1"))
    ]
    reason = refusal_reason(ipaddress.ip_address("64:ff9b::127.0.0.1"))
    assert reason == "64:ff9b::7f00:1, whose NAT64 address is 127.0.0.1"


def test_private_ok_allows_embedded_forms(private_ok: PipelineSettings) -> None:
    validate_uri("http://[64:ff9b::127.0.0.1]/x.wav", private_ok)


# --------------------------------------------------------------------------- http


class _Handler(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        if self.path == "/bad-port-redirect":
            self.send_response(302)
            self.send_header("Location", "http://localhost:99999/x.wav")
            self.end_headers()
        elif self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "/media/tone.mp4")
            self.end_headers()
        elif self.path.startswith("/loop"):
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.end_headers()
        elif self.path == "/chunked":
            # No Content-Length: the size limit must hold while streaming.
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(64):
                chunk = b"x" * 65536
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"x" * 10000)
                self.wfile.flush()
                time.sleep(0.05)
        elif self.path in self.files:
            body = self.files[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def http_server(media: Path) -> Iterator[str]:
    _Handler.files = {"/media/tone.mp4": (media / "tone.mp4").read_bytes()}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def private_ok(settings: PipelineSettings) -> PipelineSettings:
    return settings.model_copy(update={"http_allow_private": True})


def test_http_download_streams_to_a_temporary_file(
    http_server: str, media: Path, private_ok: PipelineSettings
) -> None:
    with open_input(f"{http_server}/media/tone.mp4", private_ok) as path:
        assert path.read_bytes() == (media / "tone.mp4").read_bytes()
        temporary = path
    assert not temporary.exists()


def test_http_by_host_name_resolves_and_checks(
    http_server: str, private_ok: PipelineSettings
) -> None:
    url = http_server.replace("127.0.0.1", "localhost") + "/media/tone.mp4"
    with open_input(url, private_ok) as path:
        assert path.stat().st_size > 1000


def test_http_loopback_refused_unless_allowed(http_server: str, settings: PipelineSettings) -> None:
    url = (
        http_server.replace("127.0.0.1", "localhost") + "/media/tone.mp4"
    )  # a name, resolved at open time
    with pytest.raises(
        DownloadError, match=r"resolves to a private or loopback address \(127\.0\.0\.1|::1\)"
    ):
        with open_input(url, settings):
            pass


def test_http_redirect_is_followed_and_checked(
    http_server: str, media: Path, private_ok: PipelineSettings
) -> None:
    with open_input(f"{http_server}/redirect", private_ok) as path:
        assert path.read_bytes() == (media / "tone.mp4").read_bytes()


def test_http_redirect_loop(http_server: str, private_ok: PipelineSettings) -> None:
    with pytest.raises(DownloadError, match="more than 5 redirects"):
        with open_input(f"{http_server}/loop", private_ok):
            pass


def test_http_404(http_server: str, private_ok: PipelineSettings) -> None:
    with pytest.raises(InputNotFoundError, match="HTTP 404"):
        with open_input(f"{http_server}/nothing.mp4", private_ok):
            pass


def test_http_size_limit_from_content_length(
    http_server: str, private_ok: PipelineSettings
) -> None:
    small = private_ok.model_copy(update={"http_max_bytes": 1000})
    with pytest.raises(DownloadError, match="over the limit of 1000 bytes"):
        with open_input(f"{http_server}/media/tone.mp4", small):
            pass


def test_http_size_limit_while_streaming(http_server: str, private_ok: PipelineSettings) -> None:
    small = private_ok.model_copy(update={"http_max_bytes": 1_000_000})
    with pytest.raises(DownloadError, match="over the limit of 1000000 bytes"):
        with open_input(f"{http_server}/chunked", small):
            pass


def test_http_time_limit(http_server: str, private_ok: PipelineSettings) -> None:
    quick = private_ok.model_copy(update={"http_timeout_s": 0.5})
    with pytest.raises(DownloadError, match=r"longer than 0\.5 s \(HTTP_TIMEOUT_S\)"):
        with open_input(f"{http_server}/slow", quick):
            pass


def test_http_connection_refused(private_ok: PipelineSettings) -> None:
    import socket

    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadError, match="download failed"):
        with open_input(f"http://127.0.0.1:{port}/x.mp4", private_ok):
            pass


def test_light_modules_import_nothing_heavy() -> None:
    """The facade and operator import these without the pipeline's stack (docs/architecture.md)."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    code = (
        "import sys, audioproc.sources, audioproc.storage, audioproc.errors, audioproc.models, audioproc.cli; "
        "print(sorted(m for m in ('torch', 'numpy', 'av', 'librosa', 'boto3', 'httpx') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(repo / p) for p in (".", "job_image"))}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
