"""Operator throughput on the local kwok cluster (a benchmark, not a test).

For N in (100, 1000) one-item CPU AudioJobs (the shape ``POST /process`` makes):

- ``operator``: time from the first ``kubectl create`` of the AudioJobs to all N Jobs
  created, and to all N AudioJobs Completed; the operator's peak RSS (VmHWM).
- ``baseline``: the same N Jobs (exactly what the operator would build) created directly
  with kubectl, and the time to all N Completed: what the cluster itself needs, measured
  in the same run on the same cluster.

    python bench/operator.py [--sizes 100 1000] [--interval 2]

And on real pods (``--real-pods N``; needs the real node: root and a Docker engine):

- ``real pods``: N items of ``--real-duration`` seconds of real media (AAC in MP4) in one
  AudioJob (concurrency 2) through the operator, processed by job-image pods on the real node
  (e2e/realnode.py), from ``kubectl create`` to Completed;
- ``host``: the same files through ``audioproc process --jobs 2`` on the host, in the same run.
  The ratio is what the orchestration and the container cost.

    python bench/operator.py --sizes --real-pods 8 --real-duration 60

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

from audioproc.models.audiojob import AudioJobSpec  # noqa: E402
from audioproc_operator.builder import (  # noqa: E402
    AudioJobRef,
    Placement,
    build_configmap,
    build_job,
    resolved_items,
)
from audioproc_operator.settings import OperatorSettings  # noqa: E402
from e2e.cluster import Cluster, LocalCluster, ensure_binaries  # noqa: E402
from e2e.helpers import create_namespace, peak_rss_mib  # noqa: E402
from e2e.realnode import host_volume, operator_env  # noqa: E402

BATCH = 200  # objects per kubectl call


def audiojob(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "audioproc.io/v1alpha1",
        "kind": "AudioJob",
        "metadata": {"name": f"aj-{i:05d}"},
        "spec": {
            "device": "cpu",
            "items": [{"inputUri": f"s3://media/v{i}.mp4", "videoId": f"v{i}"}],
        },
    }


def create_all(cluster: Cluster, ns: str, objects: list[dict[str, Any]]) -> None:
    for start in range(0, len(objects), BATCH):
        doc = {"apiVersion": "v1", "kind": "List", "items": objects[start : start + BATCH]}
        cluster.kubectl("-n", ns, "create", "-f", "-", input=json.dumps(doc))


def count(
    cluster: Cluster, ns: str, resource: str, jsonpath: str, wanted: str | None = None
) -> int:
    out = cluster.kubectl("-n", ns, "get", resource, "-o", f"jsonpath={jsonpath}").stdout.split()
    return len(out) if wanted is None else sum(1 for value in out if value == wanted)


def wait_count(what: str, probe: Any, n: int, timeout: float) -> float:
    began = time.monotonic()
    while (seen := probe()) < n:
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"{what}: {seen}/{n} after {timeout:.0f}s")
        time.sleep(0.5)
    return time.monotonic()


def run_operator(cluster: Cluster, n: int, interval: float, log_dir: Path) -> dict[str, float]:
    ns = create_namespace(cluster, f"bench-op-{n}")
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "OPERATOR_NAMESPACES": json.dumps([ns]),
        "OPERATOR_METRICS_PORT": "0",
        "OPERATOR_RECONCILE_INTERVAL_S": str(interval),
        "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in (".", "job_image", "operator")),
    }
    with open(log_dir / f"operator-{n}.log", "wb") as log:
        operator = subprocess.Popen(
            [sys.executable, "-m", "audioproc_operator"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            time.sleep(3)  # let it start watching: creation time is what we measure
            began = time.monotonic()
            create_all(cluster, ns, [audiojob(i) for i in range(n)])
            timeout = 120 + n * 1.0
            jobs_at = wait_count(
                "Jobs", lambda: count(cluster, ns, "jobs", "{.items[*].metadata.name}"), n, timeout
            )
            done_at = wait_count(
                "Completed",
                lambda: count(cluster, ns, "audiojobs", "{.items[*].status.phase}", "Completed"),
                n,
                timeout,
            )
            rss = peak_rss_mib(operator.pid)
        finally:
            operator.terminate()
            operator.wait(timeout=30)
    return {"jobs_created_s": jobs_at - began, "completed_s": done_at - began, "peak_rss_mib": rss}


def run_baseline(cluster: Cluster, n: int) -> dict[str, float]:
    ns = create_namespace(cluster, f"bench-base-{n}")
    settings = OperatorSettings()
    objects: list[dict[str, Any]] = []
    for i in range(n):
        body = audiojob(i)
        ref = AudioJobRef(
            body["metadata"]["name"], ns, f"uid-{i}", AudioJobSpec.model_validate(body["spec"])
        )
        for obj in (
            build_configmap(ref, 0, resolved_items(ref.spec)),
            build_job(ref, 0, 0, 1, Placement("cpu", 4), settings),
        ):
            del obj["metadata"]["ownerReferences"]  # no AudioJob owns them here
            objects.append(obj)
    began = time.monotonic()
    create_all(cluster, ns, objects)
    created_at = time.monotonic()
    done_at = wait_count(
        "Jobs succeeded",
        lambda: count(cluster, ns, "jobs", "{.items[*].status.succeeded}", "1"),
        n,
        120 + n * 1.0,
    )
    return {"jobs_created_s": created_at - began, "completed_s": done_at - began}


def write_real_media(folder: Path, n: int, duration_s: float) -> list[Path]:
    """``n`` MP4/AAC files of drums and a tone, each ``duration_s`` long (one encoded, then copied)."""
    import numpy as np

    from audioproc import samples

    sr = 44100
    mix = 0.6 * samples.drum_pattern(duration_s, sr, 120.0) + 0.4 * samples.tone(
        duration_s, sr, 220.0
    )
    first = samples.write_video(folder / "item-000.mp4", np.stack([mix, mix]), sr)
    files = [first]
    for i in range(1, n):
        files.append(folder / f"item-{i:03d}.mp4")
        files[-1].write_bytes(first.read_bytes())
    return files


def run_host(files: list[Path], out: Path) -> float:
    """Wall seconds of ``audioproc process --jobs 2`` over ``files`` (process start included)."""
    began = time.monotonic()
    subprocess.run(
        [
            str(Path(sys.executable).parent / "audioproc"),
            "process",
            *map(str, files),
            "--out",
            str(out),
            "--jobs",
            "2",
            "--device",
            "cpu",
        ],
        check=True,
        capture_output=True,
    )
    return time.monotonic() - began


def run_real_pods(local: LocalCluster, files: list[Path], data: Path, log_dir: Path) -> float:
    """Wall seconds from creating one AudioJob over ``files`` to Completed, on the real node."""
    from images.build import build_all

    refs = {r.ref.split(":")[0]: r.ref for r in build_all(local.engine)}  # unchanged ones: skipped
    local.import_images(list(refs.values()))
    ns = create_namespace(local, "bench-real-pods")
    local.kubectl(
        "-n",
        ns,
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": host_volume("data", ns, data)}
        ),
    )
    env = {
        **os.environ,
        "KUBECONFIG": str(local.kubeconfig),
        "OPERATOR_NAMESPACES": json.dumps([ns]),
        "OPERATOR_METRICS_PORT": "0",
        "OPERATOR_RECONCILE_INTERVAL_S": "1",
        "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in (".", "job_image", "operator")),
        **operator_env(refs["audioproc-job"], "data"),
    }
    body = {
        "apiVersion": "audioproc.io/v1alpha1",
        "kind": "AudioJob",
        "metadata": {"name": "real"},
        "spec": {
            "device": "cpu",
            "concurrency": 2,
            "output": "file:///data/out",
            "items": [
                {"inputUri": f"file:///data/media/{f.name}", "videoId": f.stem} for f in files
            ],
        },
    }
    with open(log_dir / "operator-real-pods.log", "wb") as log:
        operator = subprocess.Popen(
            [sys.executable, "-m", "audioproc_operator"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            time.sleep(3)
            began = time.monotonic()
            create_all(local, ns, [body])
            done_at = wait_count(
                "Completed",
                lambda: count(local, ns, "audiojobs", "{.items[*].status.phase}", "Completed"),
                1,
                120 + 60 * len(files),
            )
        finally:
            local.kubectl("-n", ns, "delete", "audiojobs", "--all", "--timeout=60s", check=False)
            operator.terminate()
            operator.wait(timeout=30)
            local.kubectl("delete", "namespace", ns, "--wait=false")
            local.kubectl("delete", "pv", f"{ns}-data", "--wait=false", check=False)
    return done_at - began


def real_pods_report(local: LocalCluster | None, n: int, duration_s: float, log_dir: Path) -> None:
    if local is None or local.node is None:
        reason = "E2E_KUBECONFIG is set" if local is None else local.real_node_missing
        print(f"real pods: skipped, no real node ({reason})")
        return
    data = log_dir / "real-pods-data"
    (data / "media").mkdir(parents=True)
    data.chmod(0o777)
    files = write_real_media(data / "media", n, duration_s)
    host_s = run_host(files, log_dir / "host-out")
    pods_s = run_real_pods(local, files, data, log_dir)
    print(f"\n{n} items x {duration_s:.0f} s of MP4/AAC, standard extractors, 2 at a time:")
    print(f"{'run':<34} {'wall (s)':>9} {'items/s':>8}")
    print(f"{'host: audioproc process --jobs 2':<34} {host_s:>9.1f} {n / host_s:>8.2f}")
    print(f"{'operator + real pods':<34} {pods_s:>9.1f} {n / pods_s:>8.2f}")
    print(f"ratio (real pods / host): {pods_s / host_s:.2f}x (goal < 1.3x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="*", default=[100, 1000], help="kwok runs (none: skip)"
    )
    parser.add_argument(
        "--real-pods", type=int, default=0, metavar="N", help="items for the real-pod run (0: skip)"
    )
    parser.add_argument(
        "--real-duration", type=float, default=60.0, help="seconds of media per real-pod item"
    )
    parser.add_argument("--interval", type=float, default=2.0, help="OPERATOR_RECONCILE_INTERVAL_S")
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    local: LocalCluster | None = None
    if os.environ.get("E2E_KUBECONFIG"):
        cluster: Cluster = Cluster(Path(os.environ["E2E_KUBECONFIG"]), ensure_binaries())
    else:
        local = LocalCluster(
            log_dir / "cluster",
            bin_dir=ensure_binaries(),
            die_with_parent=True,
            real_node=None if args.real_pods else False,
        )
        cluster = local.start()
    try:
        cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / "audiojob.yaml"))
        cluster.kubectl("wait", "--for=condition=Established", "crd/audiojobs.audioproc.io")
        print(
            f"{'N':>6} {'run':<9} {'all Jobs created (s)':>21} {'all Completed (s)':>18} {'peak RSS (MiB)':>15}"
        )
        for n in args.sizes:
            base = run_baseline(cluster, n)
            print(
                f"{n:>6} {'baseline':<9} {base['jobs_created_s']:>21.1f} {base['completed_s']:>18.1f} {'-':>15}",
                flush=True,
            )
            op = run_operator(cluster, n, args.interval, log_dir)
            print(
                f"{n:>6} {'operator':<9} {op['jobs_created_s']:>21.1f} {op['completed_s']:>18.1f} {op['peak_rss_mib']:>15.0f}",
                flush=True,
            )
            for ns in (f"bench-op-{n}", f"bench-base-{n}"):
                cluster.kubectl("delete", "namespace", ns, "--wait=false")
        if args.real_pods:
            real_pods_report(local, args.real_pods, args.real_duration, log_dir)
    finally:
        if local is not None:
            local.stop()
        print(f"logs: {log_dir}")


if __name__ == "__main__":
    main()
