"""The build cache key and the image specs, without a Docker engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from images.bases import pinned_uv_version
from images.build import REPO, ImageSpec, load_specs, source_files, source_key


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "pkg" / "tests").mkdir(parents=True)
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tmp_path / "pkg" / "mod.py").write_text("A = 1\n")
    (tmp_path / "pkg" / "tests" / "test_mod.py").write_text("def test(): pass\n")
    (tmp_path / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0")
    return tmp_path


SPEC = ImageSpec("x", "Dockerfile", {}, ("pyproject.toml", "pkg"))


def key(tree: Path, **build_args: str) -> str:
    return source_key(SPEC, build_args, {"PYTHON_IMAGE": "sha256:1"}, root=tree)


def test_the_key_follows_what_the_build_copies(tree: Path) -> None:
    before = key(tree)
    assert key(tree) == before
    (tree / "pkg" / "mod.py").write_text("A = 2\n")
    changed = key(tree)
    assert changed != before
    (tree / "pkg" / "new.py").write_text("")
    assert key(tree) != changed
    assert key(tree, TORCH_VARIANT="cpu") != key(tree)
    (tree / "Dockerfile").write_text("FROM scratch\nUSER 1\n")
    assert key(tree) != changed


def test_the_key_ignores_what_dockerignore_keeps_out(tree: Path) -> None:
    before = key(tree)
    (tree / "pkg" / "tests" / "test_mod.py").write_text("def test(): assert 0\n")
    (tree / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\1")
    (tree / "unrelated.txt").write_text("not copied")
    assert key(tree) == before
    assert [p.relative_to(tree).as_posix() for p in source_files(SPEC.sources, tree)] == [
        "pyproject.toml",
        "pkg/mod.py",
    ]


def test_specs_name_dockerfiles_and_sources_that_exist() -> None:
    specs = load_specs()
    assert {s.name for s in specs} == {"audioproc-job", "audioproc-operator", "audioproc-api"}
    for spec in specs:
        assert (REPO / spec.dockerfile).is_file()
        for source in spec.sources:
            assert (REPO / source).exists(), source
        # What the Dockerfile copies from the context is what keys the cache, and no more
        # (a baked CLAP checkpoint, CLAP_BAKE=baked, is not a `make images` build).
        copied = {
            token
            for line in (REPO / spec.dockerfile).read_text().splitlines()
            if line.startswith("COPY ") and "--from=" not in line
            for token in line.split()[1:-1]
            if not token.startswith(("--", "${"))
        }
        assert copied == set(spec.sources), spec.name


def test_uv_base_uses_the_version_the_dockerfiles_pin() -> None:
    for dockerfile in ("job_image/Dockerfile", "operator/Dockerfile", "api_facade/Dockerfile"):
        assert f"ghcr.io/astral-sh/uv:{pinned_uv_version()}\n" in (REPO / dockerfile).read_text()


def test_operator_and_chart_name_the_images_make_images_tags() -> None:
    """A bare operator and the chart run the images `make images` builds, without settings."""
    import yaml

    from audioproc_operator.settings import OperatorSettings
    from images.build import project_version

    chart = yaml.safe_load((REPO / "charts" / "audioprocessor" / "Chart.yaml").read_text())
    assert chart["appVersion"] == project_version()  # the chart's default tag
    values = yaml.safe_load((REPO / "charts" / "audioprocessor" / "values.yaml").read_text())
    names = {s.name for s in load_specs()}
    assert {values[c]["image"]["repository"] for c in ("operator", "api", "job")} == names
    assert OperatorSettings().job_image == f"audioproc-job:{project_version()}"
