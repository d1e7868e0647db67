"""A huge itemsFrom AudioJob on the local kwok cluster (a benchmark, not a test).

For each N: an item list of N items (JSON Lines) in a temporary directory, one AudioJob with
``spec.itemsFrom`` naming it (CPU, ``--concurrency`` pods at once, kwok pods that succeed at
once), and the operator as a host process watching its namespace. Printed: the seconds to
placement (the operator's streaming scan of the list, the chunk plan written to the status),
the seconds to Completed (or, past ``--limit-s``, the items finished by then and the rate),
the operator's peak RSS (VmHWM) and the size of the AudioJob's status.

Baseline, in the same run on the same cluster: one chunk's Indexed Job (1,000 items, the pod
template the operator builds) created directly with kubectl, timed to Complete: what the
cluster needs per chunk without the operator.

    python bench/items_from.py --items 5000 100000 --limit-s 600

Uses ``E2E_KUBECONFIG`` when set, else starts a LocalCluster (e2e/cluster.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "job_image"), str(ROOT / "operator")]

from audioproc.models.audiojob import AudioJobItem, AudioJobSpec  # noqa: E402
from audioproc.models.pod_contract import item_list_bytes  # noqa: E402
from audioproc_operator.builder import AudioJobRef, Placement, build_job  # noqa: E402
from audioproc_operator.items_source import scan  # noqa: E402
from audioproc_operator.settings import OperatorSettings  # noqa: E402
from e2e.cluster import Cluster, LocalCluster, ensure_binaries  # noqa: E402
from e2e.helpers import create_namespace, peak_rss_mib  # noqa: E402

SOURCE_PYTHONPATH = os.pathsep.join(str(ROOT / p) for p in (".", "job_image", "operator"))
#: Pods request almost nothing, so that 110 fit a kwok node; finished Jobs go after 30 s, so
#: that kwok's pod addresses (4,094 per node) are not used up.
OPERATOR_ENV = {
    "OPERATOR_CPU_REQUESTS": '{"cpu": "10m", "memory": "16Mi"}',
    "OPERATOR_CPU_LIMITS": "{}",
    "OPERATOR_JOB_TTL_SECONDS": "30",
    "OPERATOR_ALLOW_POD_ANNOTATIONS": "true",
    "OPERATOR_METRICS_PORT": "0",
}
POD_ANNOTATIONS = {"e2e.audioproc.io/run-duration": "1ms"}
CHUNK = 1000


def write_list(path: Path, n: int) -> str:
    items = (
        AudioJobItem(input_uri=f"s3://media/in/v{i}.mp4", video_id=f"v{i:07d}") for i in range(n)
    )
    path.write_bytes(item_list_bytes(items))
    return path.as_uri()


def run_baseline(cluster: Cluster, uri: str, concurrency: int) -> float:
    """One chunk's Job, exactly as the operator builds it, created with kubectl: s to Complete."""
    ns = "bench-items-baseline"
    create_namespace(cluster, ns)
    settings = OperatorSettings(  # OPERATOR_ENV's values
        cpu_requests={"cpu": "10m", "memory": "16Mi"},
        cpu_limits={},
        job_ttl_seconds=30,
        allow_pod_annotations=True,
    )
    spec = AudioJobSpec.model_validate({"itemsFrom": {"uri": uri}, "concurrency": concurrency})
    ref = AudioJobRef("baseline", ns, "0000", spec, pod_annotations=POD_ANNOTATIONS)
    job = build_job(ref, 0, 0, CHUNK, Placement("cpu", concurrency), settings, chunk_offset=0)
    del job["metadata"]["ownerReferences"]
    started = time.monotonic()
    cluster.kubectl("-n", ns, "create", "-f", "-", input=json.dumps(job))
    cluster.kubectl(
        "-n", ns, "wait", "--for=condition=Complete", "job/baseline-0", "--timeout=1800s"
    )
    elapsed = time.monotonic() - started
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
    return elapsed


def run_operator(
    cluster: Cluster, n: int, uri: str, concurrency: int, limit_s: float, log_dir: Path
) -> dict[str, Any]:
    ns = f"bench-items-{n}"
    create_namespace(cluster, ns)
    env = {
        **os.environ,
        "PYTHONPATH": SOURCE_PYTHONPATH,
        "KUBECONFIG": str(cluster.kubeconfig),
        "OPERATOR_NAMESPACES": json.dumps([ns]),
        **OPERATOR_ENV,
    }
    audiojob = {
        "apiVersion": "audioproc.io/v1alpha1",
        "kind": "AudioJob",
        "metadata": {
            "name": "huge",
            "annotations": {"audioproc.io/pod-annotations": json.dumps(POD_ANNOTATIONS)},
        },
        "spec": {
            "itemsFrom": {"uri": uri},
            "device": "cpu",
            "concurrency": concurrency,
            "output": "s3://features/runs",
        },
    }
    with open(log_dir / f"operator-{n}.log", "wb") as log:
        operator = subprocess.Popen(
            [sys.executable, "-m", "audioproc_operator"], env=env, stdout=log, stderr=log
        )
    try:
        started = time.monotonic()
        cluster.kubectl("-n", ns, "create", "-f", "-", input=json.dumps(audiojob))
        placed_s: float | None = None
        status: dict[str, Any] = {}
        while time.monotonic() - started < limit_s:
            time.sleep(2)
            got = cluster.kubectl("-n", ns, "get", "aj", "huge", "-o", "json", check=False)
            if got.returncode:
                continue
            status = json.loads(got.stdout).get("status") or {}
            if placed_s is None and status.get("chunkOffsets"):
                placed_s = time.monotonic() - started
            if status.get("phase") in ("Completed", "PartiallyCompleted", "Failed"):
                break
        elapsed = time.monotonic() - started
        counts = status.get("counts") or {}
        done = int(counts.get("succeeded", 0)) + int(counts.get("failed", 0))
        return {
            "placed_s": placed_s,
            "elapsed_s": elapsed,
            "phase": status.get("phase"),
            "done": done,
            "rate": done / elapsed,
            "peak_rss_mib": peak_rss_mib(operator.pid),
            "status_bytes": len(json.dumps(status).encode()),
        }
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false")
        operator.terminate()
        operator.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, nargs="+", default=[5000, 100_000])
    parser.add_argument("--concurrency", type=int, default=200, help="spec.concurrency")
    parser.add_argument(
        "--limit-s", type=float, default=600.0, help="stop waiting after this long (per N)"
    )
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-items-from-"))
    local: LocalCluster | None = None
    if os.environ.get("E2E_KUBECONFIG"):
        cluster: Cluster = Cluster(Path(os.environ["E2E_KUBECONFIG"]), ensure_binaries())
    else:
        local = LocalCluster(
            log_dir / "cluster", bin_dir=ensure_binaries(), die_with_parent=True, real_node=False
        )
        cluster = local.start()
    try:
        cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / "audiojob.yaml"))
        cluster.kubectl("wait", "--for=condition=Established", "crd/audiojobs.audioproc.io")
        if not args.no_baseline:
            uri = write_list(log_dir / "baseline.jsonl", CHUNK)
            base = run_baseline(cluster, uri, args.concurrency)
            print(
                f"baseline: one {CHUNK}-item Job by kubectl: {base:.1f} s to Complete", flush=True
            )
        for n in args.items:
            uri = write_list(log_dir / f"items-{n}.jsonl", n)
            started = time.perf_counter()
            scanned = scan(uri, CHUNK)
            print(
                f"N={n}: list {Path(uri.removeprefix('file://')).stat().st_size / 2**20:.1f} MiB, "
                f"scan in this process {time.perf_counter() - started:.2f} s "
                f"({len(scanned.chunk_starts)} chunks)",
                flush=True,
            )
            op = run_operator(cluster, n, uri, args.concurrency, args.limit_s, log_dir)
            print(
                f"N={n}: placed after {op['placed_s']:.1f} s; {op['phase']} with {op['done']} items "
                f"finished after {op['elapsed_s']:.1f} s ({op['rate']:.1f} items/s); operator peak "
                f"RSS {op['peak_rss_mib']:.0f} MiB; status {op['status_bytes']} B",
                flush=True,
            )
    finally:
        if local is not None:
            local.stop()
        print(f"logs: {log_dir}")


if __name__ == "__main__":
    main()
