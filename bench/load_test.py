"""Load test of the REST facade against the CLI on the same items, in one run.

Not a test: it prints numbers, each beside its baseline measured in the same run, and the
load average (on a shared machine, everything moves with it).

    .venv/bin/python bench/load_test.py                      # 100 items, N = 2 workers
    .venv/bin/python bench/load_test.py --workers 2 4 --tasks 100
    .venv/bin/python bench/load_test.py --tasks 20 --seconds 3 --rate 50 --duration 10
    .venv/bin/python bench/load_test.py --cluster            # + the kubernetes backend on a local
                                                             #   control plane with the operator
                                                             #   (kwok pods: no audio work)

Phases, for each N of ``--workers``:

1. baseline: ``audioproc process ITEM... --jobs N`` (process start included) on the items;
2. local backend, ``MAX_CONCURRENT_VIDEOS=N``, for each ``--niceness`` (the workers' CPU
   priority below the server's; the CLI runs at the caller's): the same items as ``POST /process`` tasks, all
   submitted at once (one connection each: submit latency p50/p95/p99 with that many in
   flight), each watched with a long poll ``GET /status/{id}?wait=30`` (no polling loop);
   items/s from the first submission to the last completion, and its ratio to the CLI's;
3. sustained: a fresh service, ``--rate`` submissions/s for ``--duration`` s, open loop
   (each sent at its scheduled time, whatever the earlier ones are doing; at most
   ``MAX_IN_FLIGHT`` outstanding, loopback only): latency p50/p99 and the rate achieved.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
PYTHONPATH = os.pathsep.join(str(REPO / p) for p in (".", "job_image", "operator", "api_facade"))
sys.path[:0] = PYTHONPATH.split(os.pathsep)

from audioproc import samples  # noqa: E402 (after the path set-up above)

EXTRACTORS = ["loudness", "spectral", "mfcc"]
#: Seconds one long poll waits (below API_WAIT_TIMEOUT_S); watchers at once (below API_MAX_WAITERS).
LONG_POLL_S = 30
WATCHERS = 32
#: Most sustained-phase submissions outstanding at once (the open loop's bound).
MAX_IN_FLIGHT = 256


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_media(root: Path, n_files: int, seconds: float) -> list[Path]:
    """Distinct real files: AAC-in-MP4 videos and MP3s of drums and a tone."""
    files = []
    for i in range(n_files):
        audio = samples.drum_pattern(seconds, 44100, bpm=90.0 + 5 * i) + samples.tone(
            seconds, 44100, f0=220.0 + 10 * i
        )
        audio = (0.5 * audio).astype(np.float32)
        path = root / (f"clip-{i}.mp4" if i % 2 == 0 else f"clip-{i}.mp3")
        if path.suffix == ".mp4":
            samples.write_video(path, audio, 44100)
        else:
            samples.write_audio(path, audio, 44100)
        files.append(path)
    return files


def make_items(files: list[Path], n_items: int) -> list[Path]:
    """``n_items`` paths with distinct names (the CLI's video id is the file name), symlinks
    to ``files`` in turn, in the files' folder (an allowed root)."""
    items = []
    for i in range(n_items):
        source = files[i % len(files)]
        link = source.parent / f"item-{i:04d}{source.suffix}"
        link.symlink_to(source.name)
        items.append(link)
    return items


def percentiles_ms(latencies_s: list[float]) -> str:
    p50, p95, p99 = np.percentile(np.array(latencies_s) * 1000, [50, 95, 99])
    return f"{p50:6.1f} / {p95:6.1f} / {p99:6.1f} ms"


def cli_items_per_s(items: list[Path], out: Path, jobs: int) -> float:
    """Items/s of ``audioproc process ITEM... --jobs N`` on the items, process start included."""
    env = {
        **os.environ,
        "PYTHONPATH": PYTHONPATH,
        "ALLOWED_ROOTS": json.dumps([str(items[0].parent)]),
        "USE_GPU": "false",
    }
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "audioproc",
            "process",
            *map(str, items),
            "--extractors",
            ",".join(EXTRACTORS),
            "--device",
            "cpu",
            "--out",
            str(out),
            "--jobs",
            str(jobs),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"audioproc process exited {done.returncode}: {done.stderr[-2000:]}")
    return len(items) / (time.perf_counter() - started)


class Facade:
    """``python -m audioproc_api serve`` in a subprocess, on a free port."""

    def __init__(self, env: dict[str, str], log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "audioproc_api",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            env={**os.environ, "PYTHONPATH": PYTHONPATH, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
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


@dataclass
class Burst:
    submit_latencies_s: list[float]
    completion_s: list[float]  # from the first submission to each task seen finished
    failed: int

    @property
    def items_per_s(self) -> float:
        return len(self.completion_s) / max(self.completion_s) if self.completion_s else 0.0


async def burst(url: str, items: list[Path], timeout_s: float) -> Burst:
    """Submit one task per item, all at once; watch each with long polls until it finishes."""
    connections = httpx.Limits(max_connections=len(items) + WATCHERS)
    async with httpx.AsyncClient(
        base_url=url, timeout=LONG_POLL_S + 60, limits=connections
    ) as client:
        warm = {
            "input_uri": str(items[0]),
            "video_id": "warm-up",
            "extractors": EXTRACTORS,
            "use_gpu": False,
        }
        (
            await client.post("/process", params={"wait": "true"}, json=warm)
        ).raise_for_status()  # worker start

        t0 = time.perf_counter()

        async def submit(item: Path) -> tuple[str, float]:
            started = time.perf_counter()
            response = await client.post(
                "/process",
                json={
                    "input_uri": str(item),
                    "video_id": item.stem,
                    "extractors": EXTRACTORS,
                    "use_gpu": False,
                },
            )
            response.raise_for_status()
            return response.json()["task_id"], time.perf_counter() - started

        submitted = await asyncio.gather(*(submit(item) for item in items))
        watchers = asyncio.Semaphore(WATCHERS)
        deadline = time.monotonic() + timeout_s

        async def watch(task_id: str) -> tuple[float, bool] | None:
            async with watchers:
                while time.monotonic() < deadline:
                    response = await client.get(
                        f"/status/{task_id}", params={"wait": LONG_POLL_S, "items_limit": 1}
                    )
                    response.raise_for_status()
                    status = response.json()["status"]
                    if status in ("completed", "failed"):
                        return time.perf_counter() - t0, status == "failed"
            return None

        finished = [
            f for f in await asyncio.gather(*(watch(task_id) for task_id, _ in submitted)) if f
        ]
    if len(finished) < len(items):
        print(
            f"  {len(items) - len(finished)} tasks not finished after {timeout_s} s",
            file=sys.stderr,
        )
    return Burst(
        [latency for _, latency in submitted], [s for s, _ in finished], sum(f for _, f in finished)
    )


async def sustained(
    url: str, items: list[Path], rate: float, duration_s: float
) -> tuple[list[float], float, int]:
    """Open loop: submission i is sent at ``i / rate`` s. Latencies (s), the rate achieved
    (submissions answered per second of the phase) and how many were not 202 (or not
    answered: a transport error)."""
    total = int(rate * duration_s)
    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT)
    in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        t0 = time.perf_counter()

        async def submit(i: int) -> tuple[float, bool]:
            await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
            async with in_flight:
                started = time.perf_counter()
                item = items[i % len(items)]
                try:
                    response = await client.post(
                        "/process",
                        json={
                            "input_uri": str(item),
                            "video_id": f"r{i:06d}",
                            "extractors": EXTRACTORS,
                            "use_gpu": False,
                        },
                    )
                except httpx.TransportError:  # e.g. a pooled connection the server had just closed
                    return time.perf_counter() - started, False
                return time.perf_counter() - started, response.status_code == 202

        results = await asyncio.gather(*(submit(i) for i in range(total)))
        wall = time.perf_counter() - t0
    return [latency for latency, _ in results], total / wall, sum(not ok for _, ok in results)


def local_env(work: Path, items: list[Path], name: str, workers: int) -> dict[str, str]:
    return {
        "API_BACKEND": "local",
        "API_STATE_DIR": str(work / f"state-{name}"),
        "OUTPUT_URI": (work / f"out-{name}").as_uri(),
        "ALLOWED_ROOTS": json.dumps([str(items[0].parent)]),
        "MAX_CONCURRENT_VIDEOS": str(workers),
        "USE_GPU": "false",
    }


def run_workers(items: list[Path], work: Path, workers: int, args: argparse.Namespace) -> None:
    load = os.getloadavg()[0]
    cli = cli_items_per_s(items, work / f"cli-{workers}", workers)
    print(
        f"N={workers} | CLI `audioproc process --jobs {workers}` {cli:5.2f} items/s | load {load:4.1f}",
        flush=True,
    )
    for niceness in args.niceness:
        name = f"burst-{workers}-nice-{niceness}"
        env = {**local_env(work, items, name, workers), "API_WORKER_NICENESS": str(niceness)}
        facade = Facade(env, work / f"facade-{name}.log")
        try:
            load = os.getloadavg()[0]
            result = asyncio.run(burst(facade.url, items, args.timeout))
        finally:
            facade.stop()
        print(
            f"N={workers} | local backend, {workers} workers at nice +{niceness} {result.items_per_s:5.2f} items/s"
            f" (x{result.items_per_s / cli:4.2f} the CLI) | submit p50/p95/p99 at {len(items)} concurrent"
            f" {percentiles_ms(result.submit_latencies_s)} | failed {result.failed} | load {load:4.1f}",
            flush=True,
        )


def run_sustained(items: list[Path], work: Path, rate: float, duration_s: float) -> None:
    facade = Facade(local_env(work, items, "sustained", 1), work / "facade-sustained.log")
    try:
        load = os.getloadavg()[0]
        latencies, achieved, refused = asyncio.run(sustained(facade.url, items, rate, duration_s))
    finally:
        facade.stop()
    p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
    print(
        f"sustained | {rate:.0f} submissions/s offered for {duration_s:.0f} s: {achieved:5.1f}/s answered,"
        f" p50 {p50:6.1f} ms, p99 {p99:6.1f} ms, not 202 or no answer: {refused} | load {load:4.1f}",
        flush=True,
    )


def run_cluster(items: list[Path], work: Path, args: argparse.Namespace) -> None:
    """The kubernetes backend: a local control plane (kwok nodes), the CRD and the operator.
    kwok pods do no audio work: this measures submissions and orchestration only."""
    from e2e.cluster import LocalCluster, ensure_binaries

    cluster = LocalCluster(work / "cluster", bin_dir=ensure_binaries(), die_with_parent=True)
    cluster.start()
    operator = None
    facade = None
    try:
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds" / "audiojob.yaml"))
        cluster.kubectl(
            "wait", "--for=condition=Established", "crd/audiojobs.audioproc.io", "--timeout=60s"
        )
        cluster.kubectl("create", "namespace", "load")
        env = {
            **os.environ,
            "PYTHONPATH": PYTHONPATH,
            "KUBECONFIG": str(cluster.kubeconfig),
            "OPERATOR_NAMESPACES": json.dumps(["load"]),
            "OPERATOR_METRICS_PORT": "0",
            "OPERATOR_RECONCILE_INTERVAL_S": "1",
        }
        operator_log = (work / "operator.log").open("wb")
        operator = subprocess.Popen(
            [sys.executable, "-m", "audioproc_operator"],
            env=env,
            stdout=operator_log,
            stderr=subprocess.STDOUT,
        )
        facade = Facade(
            {
                "API_BACKEND": "kubernetes",
                "KUBECONFIG": str(cluster.kubeconfig),
                "API_NAMESPACE": "load",
                "OUTPUT_URI": (work / "out-cluster").as_uri(),
                "ALLOWED_ROOTS": json.dumps([str(items[0].parent)]),
            },
            work / "facade-cluster.log",
        )
        load = os.getloadavg()[0]
        result = asyncio.run(burst(facade.url, items, args.timeout))
        print(
            f"cluster (kwok pods) | {result.items_per_s:5.2f} tasks/s | submit p50/p95/p99 at {len(items)}"
            f" concurrent {percentiles_ms(result.submit_latencies_s)} | load {load:4.1f}",
            flush=True,
        )
    finally:
        if facade:
            facade.stop()
        if operator:
            operator.terminate()
            operator.wait(30)
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tasks", type=int, default=100, help="items (one task each), submitted at once"
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="*",
        default=[2],
        help="N: CLI --jobs and MAX_CONCURRENT_VIDEOS (none: skip these phases)",
    )
    parser.add_argument(
        "--niceness",
        type=int,
        nargs="+",
        default=[10, 0],
        help="API_WORKER_NICENESS values (the CLI runs at the caller's priority)",
    )
    parser.add_argument("--files", type=int, default=10, help="distinct media files")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each file")
    parser.add_argument(
        "--rate", type=float, default=200.0, help="sustained phase: submissions/s (0: skip)"
    )
    parser.add_argument("--duration", type=float, default=30.0, help="sustained phase: seconds")
    parser.add_argument(
        "--timeout", type=float, default=1200.0, help="seconds to wait for a run's tasks"
    )
    parser.add_argument(
        "--cluster", action="store_true", help="also the kubernetes backend (local control plane)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="audioproc-load-") as tmp:
        work = Path(tmp)
        (work / "media").mkdir()
        items = make_items(make_media(work / "media", args.files, args.seconds), args.tasks)
        print(
            f"machine: {os.cpu_count()} CPUs; {args.tasks} items of {args.seconds:.0f} s media, extractors "
            f"{','.join(EXTRACTORS)}",
            flush=True,
        )
        for workers in args.workers:
            run_workers(items, work, workers, args)
        if args.rate:
            run_sustained(items, work, args.rate, args.duration)
        if args.cluster:
            run_cluster(items, work, args)


if __name__ == "__main__":
    main()
