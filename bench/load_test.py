"""Load test of the REST facade: 100 tasks at max_concurrent_videos 4 and 8.

Not a test: it prints numbers, each beside a baseline measured in the same run just before
it (the same kind of items through ``process_item`` one after another in one warm process, no
API), and the machine's load average (on a shared machine, the baseline moves with it).

    .venv/bin/python bench/load_test.py                         # local backend, 100 tasks, 4 and 8
    .venv/bin/python bench/load_test.py --tasks 20 --concurrency 2
    .venv/bin/python bench/load_test.py --cluster               # + the kubernetes backend on a local
                                                                #   control plane with the operator
                                                                #   (kwok pods: no audio work, so it
                                                                #   measures API + operator overhead)

For each configuration, the service (``python -m audioproc_api serve``) is started fresh; all
tasks are submitted at once from a thread pool (``POST /process``), and completion is seen by
listing ``GET /tasks?status=completed`` every 50 ms. Reported per configuration:

- submission: latency of ``POST /process`` (p50/p95/p99) and submissions per second;
- completion: time from the first submission to each task seen completed (p50/p95/p99), and
  tasks completed per second over the whole run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
PYTHONPATH = os.pathsep.join(str(REPO / p) for p in (".", "job_image", "operator", "api_facade"))
sys.path[:0] = PYTHONPATH.split(os.pathsep)

from audioproc import samples  # noqa: E402
from audioproc.runner import ItemRequest, process_item  # noqa: E402
from audioproc.settings import PipelineSettings  # noqa: E402

EXTRACTORS = ["loudness", "spectral", "mfcc"]


@dataclass
class Result:
    label: str
    submit_latencies_s: list[float]
    submit_wall_s: float
    completion_s: list[float]
    failed: int

    baseline_per_item_s: float = 0.0
    load_average: float = 0.0
    audio_work: bool = True  # kwok pods do none: no ratio to the pipeline baseline then

    def row(self) -> str:
        baseline_per_item_s = self.baseline_per_item_s
        p = np.percentile
        done = len(self.completion_s)
        throughput = done / max(self.completion_s) if done else 0.0
        sub = np.array(self.submit_latencies_s) * 1000
        comp = np.array(self.completion_s)
        ratio = f"(x{throughput * baseline_per_item_s:4.2f})" if self.audio_work else "(pods do no audio work)"
        return (
            f"{self.label:<24} submit p50/p95/p99 {p(sub, 50):6.1f} {p(sub, 95):6.1f} {p(sub, 99):6.1f} ms"
            f" ({len(sub) / self.submit_wall_s:6.1f}/s) | complete p50/p95/p99 {p(comp, 50):6.1f}"
            f" {p(comp, 95):6.1f} {p(comp, 99):6.1f} s | {throughput:5.2f} tasks/s"
            f" | baseline {1 / baseline_per_item_s:5.2f} items/s {ratio}"
            f" | load {self.load_average:4.1f} | failed {self.failed}"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_media(root: Path, n_files: int, seconds: float) -> list[Path]:
    """Distinct real files: AAC-in-MP4 videos and MP3s of drums and a tone."""
    files = []
    for i in range(n_files):
        audio = samples.drum_pattern(seconds, 44100, bpm=90.0 + 5 * i) + samples.tone(seconds, 44100, f0=220.0 + 10 * i)
        audio = (0.5 * audio).astype(np.float32)
        path = root / (f"clip-{i}.mp4" if i % 2 == 0 else f"clip-{i}.mp3")
        if path.suffix == ".mp4":
            samples.write_video(path, audio, 44100)
        else:
            samples.write_audio(path, audio, 44100)
        files.append(path)
    return files


def baseline_per_item_s(files: list[Path], out: Path, n_items: int) -> float:
    """Seconds per item of the pipeline alone: one warm process, ``process_item`` one at a time."""
    settings = PipelineSettings(allowed_roots=[files[0].parent], use_gpu=False)
    process_item(ItemRequest(str(files[0]), "warm", EXTRACTORS), output=str(out / "warm"), device="cpu",
                 settings=settings)
    started = time.perf_counter()
    for i in range(n_items):
        result = process_item(ItemRequest(str(files[i % len(files)]), f"b{i:03d}", EXTRACTORS),
                              output=str(out / "baseline"), device="cpu", settings=settings)
        assert result.status == "ok", result.error
    return (time.perf_counter() - started) / n_items


class Facade:
    """``python -m audioproc_api serve`` in a subprocess, on a free port."""

    def __init__(self, env: dict[str, str], log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "audioproc_api", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "warning"],
            env={**os.environ, "PYTHONPATH": PYTHONPATH, **env}, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"the facade exited; see {log}")
            time.sleep(0.2)
        raise RuntimeError(f"the facade was not ready in 120 s; see {log}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self._log.close()


def fire(url: str, files: list[Path], n_tasks: int, label: str, timeout_s: float) -> Result:
    bodies = [{"input_uri": str(files[i % len(files)]), "video_id": f"t{i:03d}", "extractors": EXTRACTORS,
               "use_gpu": False} for i in range(n_tasks)]
    with httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=32)) as client:
        # warm-up: one task end to end (worker start, model load), not counted
        client.post("/process", params={"wait": "true"}, json={**bodies[0], "video_id": "warm-up"})

        def submit(body: dict) -> tuple[str, float]:
            started = time.perf_counter()
            response = client.post("/process", json=body)
            response.raise_for_status()
            return response.json()["task_id"], time.perf_counter() - started

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=32) as pool:
            submitted = list(pool.map(submit, bodies))
        submit_wall = time.perf_counter() - t0
        pending = {task_id for task_id, _ in submitted}
        completion: list[float] = []
        failed = 0
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for status in ("completed", "failed"):
                cursor = None
                while True:
                    params = {"status": status, "limit": 500, **({"cursor": cursor} if cursor else {})}
                    page = client.get("/tasks", params=params).json()
                    now = time.perf_counter() - t0
                    for task in page["tasks"]:
                        if task["task_id"] in pending:
                            pending.discard(task["task_id"])
                            completion.append(now)
                            failed += status == "failed"
                    cursor = page["next_cursor"]
                    if not cursor:
                        break
            time.sleep(0.05)
    if pending:
        print(f"  {label}: {len(pending)} tasks not finished after {timeout_s} s", file=sys.stderr)
    return Result(label, [latency for _, latency in submitted], submit_wall, completion, failed)


def run_local(files: list[Path], work: Path, n_tasks: int, concurrency: int, timeout_s: float) -> Result:
    env = {
        "API_BACKEND": "local",
        "API_STATE_DIR": str(work / f"state-{concurrency}"),
        "OUTPUT_URI": (work / f"out-{concurrency}").as_uri(),
        "ALLOWED_ROOTS": json.dumps([str(files[0].parent)]),
        "MAX_CONCURRENT_VIDEOS": str(concurrency),
        "USE_GPU": "false",
    }
    facade = Facade(env, work / f"facade-local-{concurrency}.log")
    try:
        return fire(facade.url, files, n_tasks, f"local, {concurrency} workers", timeout_s)
    finally:
        facade.stop()


def run_cluster(files: list[Path], work: Path, n_tasks: int, concurrency: int, timeout_s: float) -> Result:
    """The kubernetes backend: a local control plane (kwok nodes), the CRD and the operator."""
    from e2e.cluster import LocalCluster, ensure_binaries

    cluster = LocalCluster(work / f"cluster-{concurrency}", bin_dir=ensure_binaries(), die_with_parent=True)
    cluster.start()
    operator = None
    facade = None
    try:
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds" / "audiojob.yaml"))
        cluster.kubectl("wait", "--for=condition=Established", "crd/audiojobs.audioproc.io", "--timeout=60s")
        cluster.kubectl("create", "namespace", "load")
        env = {**os.environ, "PYTHONPATH": PYTHONPATH, "KUBECONFIG": str(cluster.kubeconfig),
               "OPERATOR_NAMESPACES": json.dumps(["load"]), "OPERATOR_METRICS_PORT": "0",
               "OPERATOR_RECONCILE_INTERVAL_S": "1"}
        operator_log = (work / f"operator-{concurrency}.log").open("wb")
        operator = subprocess.Popen([sys.executable, "-m", "audioproc_operator"], env=env,
                                    stdout=operator_log, stderr=subprocess.STDOUT)
        facade = Facade({"API_BACKEND": "kubernetes", "KUBECONFIG": str(cluster.kubeconfig), "API_NAMESPACE": "load",
                         "OUTPUT_URI": (work / "out-cluster").as_uri(),
                         "ALLOWED_ROOTS": json.dumps([str(files[0].parent)])},
                        work / f"facade-cluster-{concurrency}.log")
        result = fire(facade.url, files, n_tasks, "cluster (kwok pods)", timeout_s)
        result.audio_work = False
        return result
    finally:
        if facade:
            facade.stop()
        if operator:
            operator.terminate()
            operator.wait(30)
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 8], help="MAX_CONCURRENT_VIDEOS values")
    parser.add_argument("--files", type=int, default=10, help="distinct media files")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each file")
    parser.add_argument("--baseline-items", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds to wait for a run's tasks")
    parser.add_argument("--cluster", action="store_true", help="also the kubernetes backend (local control plane)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="audioproc-load-") as tmp:
        work = Path(tmp)
        (work / "media").mkdir()
        files = make_media(work / "media", args.files, args.seconds)
        print(f"machine: {os.cpu_count()} CPUs; {args.tasks} tasks of {args.seconds:.0f} s media, extractors "
              f"{','.join(EXTRACTORS)}; baseline: process_item in one warm process, no API", flush=True)
        runs = [lambda c=c: run_local(files, work, args.tasks, c, args.timeout) for c in args.concurrency]
        if args.cluster:
            runs.append(lambda: run_cluster(files, work, args.tasks, args.concurrency[0], args.timeout))
        for run in runs:
            per_item = baseline_per_item_s(files, work, args.baseline_items)
            result = run()
            result.baseline_per_item_s = per_item
            result.load_average = os.getloadavg()[0]
            print(result.row(), flush=True)


if __name__ == "__main__":
    main()
