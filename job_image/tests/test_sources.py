"""Input URIs: allowed roots, http(s) against a loopback server, private-address refusal."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from audioproc.errors import (
    DownloadError,
    InputNotFoundError,
    PathNotAllowedError,
    UnsupportedURIError,
)
from audioproc.settings import PipelineSettings
from audioproc.sources import open_input, validate_uri


# --------------------------------------------------------------------------- local


def test_local_path_inside_allowed_root_is_used_in_place(media: Path, settings: PipelineSettings) -> None:
    with open_input(str(media / "tone.wav"), settings) as path:
        assert path == (media / "tone.wav").resolve()


def test_file_uri(media: Path, settings: PipelineSettings) -> None:
    with open_input((media / "tone.mp4").as_uri(), settings) as path:
        assert path.read_bytes() == (media / "tone.mp4").read_bytes()


def test_path_outside_allowed_roots(settings: PipelineSettings) -> None:
    with pytest.raises(PathNotAllowedError, match="outside the allowed roots .* add its directory to ALLOWED_ROOTS"):
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


@pytest.mark.parametrize("uri", ["ftp://host/x.mp4", "gs://bucket/x.mp4", "s3://bucket-only", "https:///nohost",
                                 "file://otherhost/x.mp4"])
def test_unsupported_uris(uri: str, settings: PipelineSettings) -> None:
    with pytest.raises(UnsupportedURIError, match="use a local path, file://, http://, https:// or s3://bucket/key"):
        validate_uri(uri, settings)


def test_literal_private_ip_refused_by_validate(settings: PipelineSettings) -> None:
    for uri in ("http://127.0.0.1/x.mp4", "http://10.0.0.8/x.mp4", "http://[::1]/x.mp4", "http://169.254.169.254/"):
        with pytest.raises(DownloadError, match="private or loopback address .* HTTP_ALLOW_PRIVATE=true"):
            validate_uri(uri, settings)


# --------------------------------------------------------------------------- http


class _Handler(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/redirect"):
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


def test_http_download_streams_to_a_temporary_file(http_server: str, media: Path, private_ok: PipelineSettings) -> None:
    with open_input(f"{http_server}/media/tone.mp4", private_ok) as path:
        assert path.read_bytes() == (media / "tone.mp4").read_bytes()
        temporary = path
    assert not temporary.exists()


def test_http_by_host_name_resolves_and_checks(http_server: str, private_ok: PipelineSettings) -> None:
    url = http_server.replace("127.0.0.1", "localhost") + "/media/tone.mp4"
    with open_input(url, private_ok) as path:
        assert path.stat().st_size > 1000


def test_http_loopback_refused_unless_allowed(http_server: str, settings: PipelineSettings) -> None:
    url = http_server.replace("127.0.0.1", "localhost") + "/media/tone.mp4"  # a name, resolved at open time
    with pytest.raises(DownloadError, match=r"resolves to a private or loopback address \(127\.0\.0\.1|::1\)"):
        with open_input(url, settings):
            pass


def test_http_redirect_is_followed_and_checked(http_server: str, media: Path, private_ok: PipelineSettings) -> None:
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


def test_http_size_limit_from_content_length(http_server: str, private_ok: PipelineSettings) -> None:
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
    code = ("import sys, audioproc.sources, audioproc.storage, audioproc.errors, audioproc.models, audioproc.cli; "
            "print(sorted(m for m in ('torch', 'numpy', 'av', 'librosa', 'boto3', 'httpx') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(repo / p) for p in (".", "job_image"))}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
