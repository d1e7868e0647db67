"""Build the project's images (images/images.json) with BuildKit, skipping unchanged ones.

Each image is tagged ``<name>:<project version>`` (what the chart and the operator name by
default) and labelled with a key over everything that makes it: its Dockerfile, build
arguments, base image IDs and the bytes of the sources it copies (``.dockerignore``'s view:
no tests, no caches). An image whose label matches is up to date and is not built again; a
changed one is rebuilt on top of BuildKit's layer cache.

The host's CA bundle is handed to the build as the secret ``ca_bundle`` (the download steps
use it; no layer keeps it), for machines whose registries are reached through a TLS proxy.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from images.bases import REPO, Log, ensure_bases, stderr_log
from images.engine import DockerEngine, EngineError, image_labels

SPEC_FILE = Path(__file__).resolve().parent / "images.json"
SOURCE_KEY_LABEL = "io.audioproc.source-key"
DEFAULT_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# BuildKit keeps every layer it ever built; a rebuilt job image leaves ~12 GB of old ones.
# After a build, the cache is cut to this size, least recently used first (the uv cache mount
# with torch and the current layers are the most recent and stay).
BUILD_CACHE_LIMIT = os.environ.get("AUDIOPROC_BUILD_CACHE", "20GB")
# What .dockerignore keeps out of every context, so that it does not change the key either.
IGNORED_PARTS = frozenset({"__pycache__", "tests"})
IGNORED_SUFFIXES = (".pyc",)


@dataclass(frozen=True)
class ImageSpec:
    """One entry of images/images.json."""

    name: str
    dockerfile: str
    build_args: dict[str, str] = field(default_factory=dict)
    sources: tuple[str, ...] = ()

    def ref(self, tag: str) -> str:
        return f"{self.name}:{tag}"


def load_specs(path: Path = SPEC_FILE) -> list[ImageSpec]:
    raw = json.loads(path.read_text())["images"]
    return [
        ImageSpec(s["name"], s["dockerfile"], dict(s.get("build_args", {})), tuple(s["sources"]))
        for s in raw
    ]


def project_version(pyproject: Path = REPO / "pyproject.toml") -> str:
    """The image tag: the distribution's version (the chart's appVersion is kept equal by a test)."""
    version: str = tomllib.loads(pyproject.read_text())["project"]["version"]
    return version


def source_files(sources: Iterable[str], root: Path = REPO) -> Iterator[Path]:
    """The files a build copies from ``sources``, sorted, as .dockerignore filters them."""
    for source in sources:
        path = root / source
        candidates = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in candidates:
            relative = file.relative_to(root)
            if IGNORED_PARTS.isdisjoint(relative.parts) and not file.name.endswith(
                IGNORED_SUFFIXES
            ):
                yield file


def source_key(
    spec: ImageSpec, build_args: dict[str, str], base_ids: dict[str, str], root: Path = REPO
) -> str:
    """A digest of everything that makes the image (see the module docstring)."""
    digest = hashlib.sha256()
    digest.update((root / spec.dockerfile).read_bytes())
    digest.update(json.dumps([build_args, base_ids], sort_keys=True).encode())
    for file in source_files(spec.sources, root):
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()[:32]


def ca_bundle() -> Path | None:
    """The CA bundle to pass as a build secret: ``AUDIOPROC_CA_BUNDLE`` (empty: none) or the host's."""
    named = os.environ.get("AUDIOPROC_CA_BUNDLE")
    if named is not None:
        return Path(named) if named else None
    return DEFAULT_CA_BUNDLE if DEFAULT_CA_BUNDLE.exists() else None


def base_images(engine: DockerEngine, log: Log = stderr_log) -> dict[str, str]:
    """``PYTHON_IMAGE``/``UV_IMAGE``: from the environment when both are set, else made here."""
    named = {arg: os.environ[arg] for arg in ("PYTHON_IMAGE", "UV_IMAGE") if os.environ.get(arg)}
    if len(named) == 2:
        return named
    return {**ensure_bases(engine, log).build_args(), **named}


@dataclass(frozen=True)
class BuildResult:
    ref: str
    image_id: str
    built: bool  # False: the image was up to date
    seconds: float
    size_bytes: int


def build_image(
    engine: DockerEngine,
    spec: ImageSpec,
    tag: str,
    bases: dict[str, str],
    force: bool = False,
    log: Log = stderr_log,
) -> BuildResult:
    """Build one image unless its key is unchanged (``force``: build anyway)."""
    began = time.monotonic()
    build_args = {**bases, **spec.build_args}
    base_ids = {arg: engine.image_id(ref) or ref for arg, ref in bases.items()}
    key = source_key(spec, build_args, base_ids)
    ref = spec.ref(tag)
    previous = engine.image(ref)
    built = force or image_labels(previous).get(SOURCE_KEY_LABEL) != key
    if built:
        log(f"building {ref} from {spec.dockerfile}")
        args = [
            "build",
            "--progress=plain",
            "-f",
            str(REPO / spec.dockerfile),
            "-t",
            ref,
            "--label",
            f"{SOURCE_KEY_LABEL}={key}",
        ]
        for name, value in build_args.items():
            args += ["--build-arg", f"{name}={value}"]
        bundle = ca_bundle()
        if bundle:
            args += ["--secret", f"id=ca_bundle,src={bundle}"]
        result = engine.run(*args, str(REPO), check=False, capture=False)
        if result.returncode != 0:
            raise EngineError(
                f"building {ref} failed (exit code {result.returncode}); the build log is above"
            )
    image = engine.image(ref)
    if image is None:
        raise EngineError(f"{ref} is missing after its build")
    if previous is not None and previous["Id"] != image["Id"]:
        # The image this one replaced, now untagged: gone, unless a container still uses it.
        engine.run("image", "rm", previous["Id"], check=False)
    return BuildResult(ref, image["Id"], built, time.monotonic() - began, int(image.get("Size", 0)))


def build_all(
    engine: DockerEngine, names: Iterable[str] = (), force: bool = False, log: Log = stderr_log
) -> list[BuildResult]:
    """Build the named images (all when none are named), in images.json's order."""
    specs = load_specs()
    wanted = set(names)
    unknown = wanted - {s.name for s in specs}
    if unknown:
        raise EngineError(
            f"unknown image(s) {sorted(unknown)}; images.json has {[s.name for s in specs]}"
        )
    bases = base_images(engine, log)
    tag = project_version()
    results = [
        build_image(engine, spec, tag, bases, force, log)
        for spec in specs
        if not wanted or spec.name in wanted
    ]
    if any(r.built for r in results):
        engine.run(
            "builder", "prune", "--force", f"--keep-storage={BUILD_CACHE_LIMIT}", check=False
        )
    return results
