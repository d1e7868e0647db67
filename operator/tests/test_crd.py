"""The CRD is generated from the pydantic models and stays structural."""

from __future__ import annotations

import itertools
import posixpath
from pathlib import Path

import pytest
import yaml

from audioproc.models.audiojob import (
    INPUT_URI_PATTERN,
    OUTPUT_URI_PATTERN,
    VIDEO_ID_PATTERN,
    AudioJob,
)
from audioproc_operator.crd import crd, render

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "audiojob.yaml"
EXAMPLES = sorted((ROOT / "crds" / "examples").glob("*.yaml"))
DOCS_EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.yaml"))
FORBIDDEN = {
    "$ref",
    "$defs",
    "anyOf",
    "allOf",
    "oneOf",
    "not",
    "additionalProperties",
    "title",
    "const",
}


def walk(node, path="schema"):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


def schema():
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_crd_file_matches_models():
    assert CRD_FILE.read_text() == render(), (
        "crds/audiojob.yaml drifted from audioproc.models.audiojob: "
        "run `python -m audioproc_operator.crd > crds/audiojob.yaml`"
    )


def test_schema_is_structural():
    for path, node in walk(schema()):
        if path.endswith(".properties") or path.endswith(".enum"):
            continue
        assert not FORBIDDEN & node.keys(), f"{path} uses {FORBIDDEN & node.keys()}"
        if "properties" in node or "items" in node:
            assert node.get("type") in ("object", "array"), f"{path} has no type"


def test_schema_carries_validation_of_the_models():
    spec = schema()["properties"]["spec"]["properties"]
    item = spec["items"]["items"]["properties"]
    assert item["videoId"]["pattern"] == VIDEO_ID_PATTERN
    assert (
        spec["output"]["pattern"] == OUTPUT_URI_PATTERN
        and item["inputUri"]["pattern"] == INPUT_URI_PATTERN
    )
    assert spec["device"]["enum"] == ["auto", "gpu", "cpu"] and spec["device"]["default"] == "auto"
    assert spec["items"]["minItems"] == 1 and spec["items"]["maxItems"] == 10_000
    assert spec["concurrency"]["minimum"] == 1 and spec["retriesPerItem"]["default"] == 2


def test_crd_has_status_subresource_short_name_and_columns():
    version = crd()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert crd()["spec"]["names"]["shortNames"] == ["aj"]
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Phase", "Progress", "Device", "Items", "Succeeded", "Failed", "Age"]
    wide = [c["name"] for c in version["additionalPrinterColumns"] if c.get("priority")]
    assert wide == ["GPUs", "Queue", "Message"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid_audiojobs(path):
    doc = yaml.safe_load(path.read_text())
    job = AudioJob.model_validate(doc)
    assert job.metadata.name


def test_there_are_examples():
    assert {p.name for p in EXAMPLES} >= {
        "cpu-batch.yaml",
        "gpu.yaml",
        "auto.yaml",
        "s3-output.yaml",
    }


def header(path: Path) -> str:
    """The comment lines a file starts with."""
    return "\n".join(
        itertools.takewhile(lambda line: line.startswith("#"), path.read_text().splitlines())
    )


def needs(job: AudioJob) -> set[str]:
    """What an example's header must name for it to run on real pods (kwok pods need nothing).

    A local input needs its directory in the pods (a volume), a file:// output a writable
    parent, s3:// an S3 store and its settings, http(s) a reachable host, gpu a GPU pool,
    clap a checkpoint.
    """
    wanted = set()
    for uri in [*(item.input_uri for item in job.spec.items), job.spec.output]:
        if uri.startswith("s3://"):
            wanted.add("S3")
        elif uri.startswith(("http://", "https://")):
            wanted.add("http")
        else:
            wanted.add(posixpath.dirname(uri.removeprefix("file://")))
    if job.spec.device.value == "gpu":
        wanted.add("GPU")
    extractors = [
        *(job.spec.extractors or []),
        *(e for item in job.spec.items for e in item.extractors or []),
    ]
    if any(e.value == "clap" for e in extractors):
        wanted.add("CLAP_CHECKPOINT")
    return wanted


@pytest.mark.parametrize(
    "path", [*EXAMPLES, *DOCS_EXAMPLES], ids=lambda p: f"{p.parent.parent.name}/{p.name}"
)
def test_examples_say_what_they_need(path):
    text = header(path)
    wanted = needs(AudioJob.model_validate(yaml.safe_load(path.read_text())))
    assert not wanted or "Needs:" in text, f"{path.name}: no 'Needs:' line in its first comments"
    assert {w for w in wanted if w not in text} == set(), (
        f"{path.name}: its header does not say it needs these"
    )
