"""Images on the real node: a rebuilt image replaces the old build in the node's containerd.

The CRI plugin keeps each imported image under its ID as well as its tag; without pruning,
every rebuild of the job image would leave gigabytes in the cached containerd root.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from e2e.cluster import LocalCluster
from e2e.realnode import IMPORTED_RECORD, RealNode, normalized_ref
from images.engine import DockerEngine

pytestmark = [pytest.mark.e2e, pytest.mark.real_node]

REF = "audioproc-test/rebuilt:1"


def test_a_rebuilt_image_replaces_the_old_build(
    cluster: LocalCluster,
    real_node: RealNode,
    docker_engine: DockerEngine,
    project_images: dict[str, str],
    tmp_path: Path,
) -> None:
    def node_refs() -> list[str]:
        return real_node.ctr("images", "list", "--quiet").stdout.decode().split()

    ids = []
    try:
        for build in (1, 2):  # two builds of one tag: a label makes a new image ID
            (tmp_path / "Dockerfile").write_text(
                f"FROM audioproc-base/pause:1\nLABEL io.audioproc.test-build={build}\n"
            )
            docker_engine.run("build", "--quiet", "-t", REF, str(tmp_path))
            ids.append(docker_engine.image_id(REF))
            assert cluster.import_images([REF]) == [REF]
            assert ids[-1] in node_refs()

        refs = node_refs()
        assert ids[0] != ids[1]
        assert ids[0] not in refs, "the old build is still on the node"
        assert normalized_ref(REF) in refs
        assert all(ref in refs for ref in project_images.values() for ref in [normalized_ref(ref)])
    finally:
        real_node.ctr("images", "rm", "--sync", normalized_ref(REF), *ids, check=False)
        docker_engine.run("rmi", REF, check=False)
        record = json.loads(IMPORTED_RECORD.read_text())
        record.pop(normalized_ref(REF), None)
        IMPORTED_RECORD.write_text(json.dumps(record, indent=2))
