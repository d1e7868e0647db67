"""Base images made from the package registries alone, for machines without Docker Hub or ghcr.

- ``python``: a Debian root filesystem made by ``mmdebstrap`` from the machine's own apt sources
  (python3 and ca-certificates on ``minbase``), ``docker import``ed. It replaces
  ``python:3.12-slim-bookworm`` as ``PYTHON_IMAGE``; its Python is the suite's (3.11 on bookworm).
- ``uv``: the static ``uv`` binary from its wheel on the package index, alone in a one-layer
  image, as ``UV_IMAGE`` (the Dockerfiles copy ``/uv`` out of it). The version is the one the
  Dockerfiles pin in their ``UV_IMAGE`` default, so both routes build with the same uv.
- ``pause``: the real node's sandbox image (``images/pause/main.go``, a static Go binary).

Each image carries a label with the key of what made it; an image whose key is unchanged is
not made again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from images.engine import CACHE_DIR, DockerEngine, EngineError

REPO = Path(__file__).resolve().parents[1]
KEY_LABEL = "io.audioproc.key"
PAUSE_SOURCE = Path(__file__).resolve().parent / "pause"
PYTHON_PACKAGES = ("python3", "ca-certificates")
UV_WHEEL_PLATFORM = "musllinux_1_1_x86_64"  # the static build: runs on any Linux base

Log = Callable[[str], None]


def stderr_log(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


def debian_suite() -> str:
    """The machine's Debian suite (``VERSION_CODENAME``): the base is made from the same apt sources."""
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip('"')
    raise EngineError("cannot tell the Debian suite from /etc/os-release (mmdebstrap needs one)")


def pinned_uv_version(dockerfile: Path = REPO / "operator" / "Dockerfile") -> str:
    """The uv version of the Dockerfiles' ``UV_IMAGE`` default (``ghcr.io/astral-sh/uv:X.Y.Z``)."""
    match = re.search(r"^ARG UV_IMAGE=\S+:(\d+\.\d+\.\d+)\s*$", dockerfile.read_text(), re.M)
    if not match:
        raise EngineError(f"no pinned UV_IMAGE version in {dockerfile}")
    return match.group(1)


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BaseImages:
    """References of the three base images, as build arguments and for the node."""

    python: str
    uv: str
    pause: str

    def build_args(self) -> dict[str, str]:
        return {"PYTHON_IMAGE": self.python, "UV_IMAGE": self.uv}


def _import(
    engine: DockerEngine, tar: bytes | Path, ref: str, key: str, changes: tuple[str, ...] = ()
) -> None:
    """``docker import`` a root filesystem tar as ``ref``, labelled with ``key``."""
    args = ["import", "--change", f"LABEL {KEY_LABEL}={key}"]
    for change in changes:
        args += ["--change", change]
    if isinstance(tar, Path):
        engine.run(*args, str(tar), ref)
    else:
        engine.run(*args, "-", ref, input=tar)


def _single_file_tar(name: str, content: bytes, mode: int = 0o755) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(content), mode
        tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def python_base(engine: DockerEngine, log: Log = stderr_log) -> str:
    suite = debian_suite()
    ref = f"audioproc-base/python:{suite}"
    key = _key("mmdebstrap", "minbase", suite, PYTHON_PACKAGES)
    if engine.label(ref, KEY_LABEL) == key:
        return ref
    log(f"making {ref} with mmdebstrap (Debian {suite}: {', '.join(PYTHON_PACKAGES)})")
    with tempfile.TemporaryDirectory(prefix="audioproc-base-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        result = subprocess.run(
            [
                "mmdebstrap",
                "--variant=minbase",
                f"--include={','.join(PYTHON_PACKAGES)}",
                '--aptopt=Acquire::Retries "3"',
                suite,
                str(rootfs),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise EngineError(
                f"mmdebstrap failed ({result.returncode}): {result.stderr.strip()[-2000:]}"
            )
        _import(engine, rootfs, ref, key, ('CMD ["python3"]',))
    return ref


def uv_base(engine: DockerEngine, log: Log = stderr_log) -> str:
    version = pinned_uv_version()
    ref = f"audioproc-base/uv:{version}"
    key = _key("uv-wheel", version, UV_WHEEL_PLATFORM)
    if engine.label(ref, KEY_LABEL) == key:
        return ref
    log(f"making {ref} from the uv {version} wheel")
    with tempfile.TemporaryDirectory(prefix="audioproc-uv-") as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                f"--platform={UV_WHEEL_PLATFORM}",
                "--dest",
                tmp,
                f"uv=={version}",
            ],
            check=True,
        )
        wheel = next(Path(tmp).glob("uv-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            binary = archive.read(f"uv-{version}.data/scripts/uv")
    _import(engine, _single_file_tar("uv", binary), ref, key)
    return ref


def pause_base(engine: DockerEngine, log: Log = stderr_log) -> str:
    source = (PAUSE_SOURCE / "main.go").read_bytes() + (PAUSE_SOURCE / "go.mod").read_bytes()
    key = _key("pause", hashlib.sha256(source).hexdigest())
    ref = "audioproc-base/pause:1"
    if engine.label(ref, KEY_LABEL) == key:
        return ref
    log(f"making {ref} (images/pause, a static Go binary)")
    with tempfile.TemporaryDirectory(prefix="audioproc-pause-") as tmp:
        binary = Path(tmp) / "pause"
        subprocess.run(
            ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(binary), "."],
            cwd=PAUSE_SOURCE,
            check=True,
            env={**_go_env(), "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"},
        )
        tar = _single_file_tar("pause", binary.read_bytes())
    _import(engine, tar, ref, key, ('ENTRYPOINT ["/pause"]',))
    return ref


def _go_env() -> dict[str, str]:
    """The control plane's Go caches (build-bins.sh): one build cache for every Go build here."""
    return {
        **os.environ,
        "GOCACHE": os.environ.get("GOCACHE", str(CACHE_DIR / "go" / "build")),
        "GOMODCACHE": os.environ.get("GOMODCACHE", str(CACHE_DIR / "go" / "mod")),
    }


def ensure_bases(engine: DockerEngine, log: Log = stderr_log) -> BaseImages:
    """Make (or find up to date) the three base images and return their references."""
    return BaseImages(
        python=python_base(engine, log), uv=uv_base(engine, log), pause=pause_base(engine, log)
    )
