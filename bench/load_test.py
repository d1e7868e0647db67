"""Load test of the REST facade against the CLI on the same items, in one run.

Not a test: it prints numbers, each beside its baseline measured in the same run, and the
load average (on a shared machine, everything moves with it).

    .venv/bin/python bench/load_test.py                      # 100 items, N = 2 workers
    .venv/bin/python bench/load_test.py --workers 2 4 --tasks 100
    .venv/bin/python bench/load_test.py --tasks 20 --seconds 3 --rate 50 --duration 10
    .venv/bin/python bench/load_test.py --backend kubernetes [--kubeconfig PATH]

Phases of the local backend (the default), for each N of ``--workers``:

1. baseline: ``audioproc process ITEM... --jobs N`` (process start included) on the items;
2. local backend, ``MAX_CONCURRENT_VIDEOS=N``, for each ``--niceness`` (the workers' CPU
   priority below the server's; the CLI runs at the caller's): the same items as ``POST /process`` tasks, all
   submitted at once (one connection each: submit latency p50/p95/p99 with that many in
   flight), each watched with a long poll ``GET /status/{id}?wait=30`` (no polling loop);
   items/s from the first submission to the last completion, and its ratio to the CLI's;
3. sustained: a fresh service, ``--rate`` submissions/s for ``--duration`` s, open loop
   (each sent at its scheduled time, whatever the earlier ones are doing; at most
   ``MAX_IN_FLIGHT`` outstanding, loopback only): latency p50/p99 and the rate achieved.

With ``--backend kubernetes``: the cluster of ``--kubeconfig``, else a local control plane
started for the run (kwok nodes, whose pods succeed without doing audio work: submissions
and orchestration only), the CRD, and the operator watching the burst's namespaces, as in the
e2e tests. A submission is one AudioJob create; the baseline is ``kubectl create`` of the same
AudioJobs (``audiojob_for`` of the same requests), each in a namespace of its own:

1. burst: the items as AudioJobs, three ways: ``kubectl create -f`` one process per AudioJob,
   all started at once (latency: each process's wall); one ``kubectl create -f`` of all of
   them; the facade, as phase 2 above. Completion: tasks/s from the first submission to the
   last AudioJob finished (a watch for kubectl's, the long polls for the facade's);
2. sustained (namespaces the operator does not watch): ``kubectl create -f`` at ``--rate``/s,
   one process each, at most ``KUBECTL_IN_FLIGHT`` at once, none started after
   ``--duration``; then the facade as phase 3 above.
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
from typing import Any

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


async def burst(
    url: str, items: list[Path], timeout_s: float, wait_for_warm_up: bool = True
) -> Burst:
    """Submit one warm-up task (and wait for it), then one task per item, all at once; watch
    each with long polls until it finishes."""
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
        # the local backend's workers start; kwok pods write no manifest, so only submit there
        params = {"wait": "true"} if wait_for_warm_up else {}
        warmed = await client.post("/process", params=params, json=warm)
        if warmed.is_error:
            raise RuntimeError(f"the warm-up task: {warmed.status_code} {warmed.text}")

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


#: kubectl processes at once in the kubernetes sustained phase (each is a Go process of about
#: 50 MB and 0.1 s of CPU: more would measure the machine's memory, not the API server).
KUBECTL_IN_FLIGHT = 16


@dataclass
class KubernetesRun:
    """Where the kubernetes phases run: a cluster with the CRD, the operator watching
    ``watched`` namespaces, and the objects the facade would create for the items."""

    cluster: Any  # e2e.cluster.Cluster (imported lazily: the local phases do not need it)
    work: Path
    items: list[Path]
    output: str
    watched: list[str]
    unwatched: list[str]

    def audiojobs(self, namespace: str, prefix: str = "") -> list[dict[str, Any]]:
        """What ``POST /process`` of each item creates (``audiojob_for``), in ``namespace``."""
        from audioproc_api.backends.base import Submission, new_task_id
        from audioproc_api.backends.kubernetes import audiojob_for
        from audioproc_api.routes import build_spec
        from audioproc_api.schemas import ProcessRequest, TaskKind

        objects = []
        for item in self.items:
            request = ProcessRequest(
                input_uri=str(item), video_id=item.stem, extractors=EXTRACTORS, use_gpu=False
            )
            spec = build_spec([request], request.use_gpu, 1, self.output)
            task_id = prefix + new_task_id(TaskKind.process)
            submission = Submission(task_id, TaskKind.process, spec, request_id="load-test")
            objects.append(audiojob_for(submission, namespace))
        return objects

    def kubectl_command(self) -> list[str]:
        assert self.cluster.bin_dir is not None, "no kubectl built (make cluster-bins)"
        return [str(self.cluster.bin_dir / "kubectl"), f"--kubeconfig={self.cluster.kubeconfig}"]


def finish_times(run: KubernetesRun, namespace: str, expected: int, timeout_s: float) -> Any:
    """Start watching ``namespace``'s AudioJobs in a thread; the returned function waits for
    ``expected`` of them to finish and gives each one's ``time.perf_counter()`` at that point."""
    import threading

    from kubernetes import client, watch

    from audioproc.models.audiojob import GROUP, PLURAL, VERSION
    from audioproc_api.backends.kubernetes import view_of

    api = client.CustomObjectsApi(run.cluster.api_client())
    finished: dict[str, float] = {}
    done = threading.Event()

    def follow() -> None:
        stream = watch.Watch()
        deadline = time.monotonic() + timeout_s
        while not done.is_set() and time.monotonic() < deadline:
            for event in stream.stream(
                api.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                timeout_seconds=30,
            ):
                obj = event["raw_object"]
                if obj.get("status") and view_of(obj, with_items=False).status.finished:
                    finished.setdefault(obj["metadata"]["name"], time.perf_counter())
                if len(finished) >= expected:
                    done.set()
                    stream.stop()
                    break

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()

    def wait() -> list[float]:
        done.wait(timeout_s)
        if len(finished) < expected:
            print(
                f"  {expected - len(finished)} AudioJobs not finished after {timeout_s} s",
                file=sys.stderr,
            )
        return list(finished.values())

    return wait


async def kubectl_each(run: KubernetesRun, files: list[Path]) -> list[float]:
    """``kubectl create -f FILE`` for each file, all started at once: each process's wall (s)."""

    async def create(path: Path) -> float:
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            *run.kubectl_command(),
            "create",
            "-f",
            str(path),
            "-o",
            "name",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"kubectl create -f {path}: {stderr.decode()[-500:]}")
        return time.perf_counter() - started

    return list(await asyncio.gather(*(create(path) for path in files)))


def write_objects(directory: Path, objects: list[dict[str, Any]]) -> list[Path]:
    directory.mkdir(parents=True)
    paths = [directory / f"{o['metadata']['name']}.json" for o in objects]
    for path, obj in zip(paths, objects, strict=True):
        path.write_text(json.dumps(obj))
    return paths


def completion_line(what: str, t0: float, finished: list[float]) -> str:
    if not finished:
        return f"{what}: none finished"
    return f"{what}: {len(finished) / (max(finished) - t0):5.2f} tasks/s ({len(finished)} done)"


def kubernetes_burst(run: KubernetesRun, args: argparse.Namespace) -> None:
    """100 at once, three ways, each in its own namespace watched by the operator: kubectl
    (one process per AudioJob; then one process for all), the facade. Submit latencies and
    completion throughput (first submission to last AudioJob finished)."""
    n = len(run.items)
    each_ns, all_ns, facade_ns = run.watched
    # kubectl, one process per AudioJob, all at once
    files = write_objects(run.work / "kubectl-each", run.audiojobs(each_ns))
    wait = finish_times(run, each_ns, n, args.timeout)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    latencies = asyncio.run(kubectl_each(run, files))
    print(
        f"kubernetes | baseline: `kubectl create -f` x{n}, one process per AudioJob, all at once"
        f" | submit p50/p95/p99 {percentiles_ms(latencies)}"
        f" | {completion_line('completion', t0, wait())} | load {load:4.1f}",
        flush=True,
    )
    # kubectl, one process for all of them
    all_file = run.work / "kubectl-all.json"
    objects = run.audiojobs(all_ns)
    all_file.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    wait = finish_times(run, all_ns, n, args.timeout)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    subprocess.run(
        [*run.kubectl_command(), "create", "-f", str(all_file), "-o", "name"],
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - t0
    print(
        f"kubernetes | baseline: one `kubectl create -f` of all {n} | all created in"
        f" {1000 * wall:6.1f} ms ({1000 * wall / n:5.1f} ms each)"
        f" | {completion_line('completion', t0, wait())} | load {load:4.1f}",
        flush=True,
    )
    # the facade
    facade = kubernetes_facade(run, facade_ns, "burst")
    try:
        load = os.getloadavg()[0]
        result = asyncio.run(burst(facade.url, run.items, args.timeout, False))
    finally:
        facade.stop()
    print(
        f"kubernetes | facade: {n} `POST /process` at once | submit p50/p95/p99"
        f" {percentiles_ms(result.submit_latencies_s)} | completion: {result.items_per_s:5.2f}"
        f" tasks/s ({len(result.completion_s)} done, {result.failed} failed) | load {load:4.1f}",
        flush=True,
    )


async def kubectl_sustained(
    run: KubernetesRun, files: list[Path], rate: float, duration_s: float
) -> tuple[list[float], float, int]:
    """Open loop as ``sustained``: ``kubectl create -f`` of file i at ``i / rate`` s, at most
    ``KUBECTL_IN_FLIGHT`` processes at once; none is started after ``duration_s``. Latencies
    (s, process start to exit), the rate achieved (created per second of the phase) and how
    many were not started in time."""
    slots = asyncio.Semaphore(KUBECTL_IN_FLIGHT)
    t0 = time.perf_counter()

    async def create(i: int, path: Path) -> float | None:
        await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
        async with slots:
            if time.perf_counter() - t0 > duration_s:
                return None
            return (await kubectl_each(run, [path]))[0]

    results = await asyncio.gather(*(create(i, path) for i, path in enumerate(files)))
    latencies = [r for r in results if r is not None]
    return latencies, len(latencies) / (time.perf_counter() - t0), len(results) - len(latencies)


def kubernetes_sustained(run: KubernetesRun, rate: float, duration_s: float) -> None:
    """``--rate`` submissions/s for ``--duration`` s: kubectl (one process each), then the
    facade, each in a namespace the operator does not watch (submissions only)."""
    kubectl_ns, facade_ns = run.unwatched
    total = int(rate * duration_s)
    objects = [o for _ in range(-(-total // len(run.items))) for o in run.audiojobs(kubectl_ns)]
    files = write_objects(run.work / "kubectl-sustained", objects[:total])
    load = os.getloadavg()[0]
    latencies, achieved, late = asyncio.run(kubectl_sustained(run, files, rate, duration_s))
    p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
    print(
        f"kubernetes sustained | baseline: `kubectl create -f`, one process per AudioJob, at most"
        f" {KUBECTL_IN_FLIGHT} at once, {rate:.0f}/s offered for {duration_s:.0f} s:"
        f" {achieved:5.1f}/s created, p50 {p50:6.1f} ms, p99 {p99:6.1f} ms, not started in time:"
        f" {late} | load {load:4.1f}",
        flush=True,
    )
    facade = kubernetes_facade(run, facade_ns, "sustained")
    try:
        load = os.getloadavg()[0]
        latencies, achieved, refused = asyncio.run(
            sustained(facade.url, run.items, rate, duration_s)
        )
    finally:
        facade.stop()
    p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
    print(
        f"kubernetes sustained | facade: {rate:.0f} `POST /process`/s offered for"
        f" {duration_s:.0f} s: {achieved:5.1f}/s answered, p50 {p50:6.1f} ms, p99 {p99:6.1f} ms,"
        f" not 202 or no answer: {refused} | load {load:4.1f}",
        flush=True,
    )


def kubernetes_facade(run: KubernetesRun, namespace: str, name: str) -> Facade:
    return Facade(
        {
            "API_BACKEND": "kubernetes",
            "KUBECONFIG": str(run.cluster.kubeconfig),
            "API_NAMESPACE": namespace,
            "OUTPUT_URI": run.output,
            "ALLOWED_ROOTS": json.dumps([str(run.items[0].parent)]),
        },
        run.work / f"facade-kubernetes-{name}.log",
    )


def run_kubernetes(items: list[Path], work: Path, args: argparse.Namespace) -> None:
    """The kubernetes backend against ``--kubeconfig``'s cluster, or a local control plane
    started here (kwok nodes only, never the real node): the CRD, namespaces of this run's
    own, the operator watching the burst's. kwok pods do no audio work: this measures
    submissions and orchestration only."""
    import secrets

    from e2e.cluster import Cluster, LocalCluster, cached_binaries, ensure_binaries

    local = None
    if args.kubeconfig:
        cluster = Cluster(args.kubeconfig, cached_binaries())
    else:
        local = LocalCluster(
            work / "cluster", bin_dir=ensure_binaries(), die_with_parent=True, real_node=False
        )
        cluster = local.start()
    run_id = secrets.token_hex(3)
    names = ("each", "all", "facade", "sustained-kubectl", "sustained-facade")
    namespaces = [f"load-{run_id}-{name}" for name in names]
    run = KubernetesRun(
        cluster, work, items, (work / "out-kubernetes").as_uri(), namespaces[:3], namespaces[3:]
    )
    operator = None
    try:
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds" / "audiojob.yaml"))
        cluster.kubectl(
            "wait", "--for=condition=Established", "crd/audiojobs.audioproc.io", "--timeout=60s"
        )
        for namespace in namespaces:
            cluster.kubectl("create", "namespace", namespace)
        env = {
            **os.environ,
            "PYTHONPATH": PYTHONPATH,
            "KUBECONFIG": str(cluster.kubeconfig),
            "OPERATOR_NAMESPACES": json.dumps(run.watched),
            "OPERATOR_METRICS_PORT": "0",
            "OPERATOR_RECONCILE_INTERVAL_S": "1",
        }
        with (work / "operator.log").open("wb") as operator_log:
            operator = subprocess.Popen(
                [sys.executable, "-m", "audioproc_operator"],
                env=env,
                stdout=operator_log,
                stderr=subprocess.STDOUT,
            )
        kubernetes_burst(run, args)
        if args.rate:
            kubernetes_sustained(run, args.rate, args.duration)
    finally:
        if local is None:  # someone else's cluster: delete what this run made, while the
            # operator still runs (it removes its finalizers from the watched AudioJobs)
            cluster.kubectl("delete", "namespace", *namespaces, "--timeout=300s", check=False)
        if operator:
            operator.terminate()
            operator.wait(30)
        if local is not None:
            local.stop()


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
        "--backend",
        choices=("local", "kubernetes"),
        default="local",
        help="local: the CLI and the local backend; kubernetes: the kubernetes backend and kubectl",
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        help="kubernetes: the cluster to use (default: start a local control plane, kwok nodes)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        help="keep media, logs and state in this new folder (default: a temporary one, removed)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="audioproc-load-") as tmp:
        work = Path(tmp)
        if args.work:
            work = args.work.resolve()
            work.mkdir(parents=True)
        (work / "media").mkdir()
        items = make_items(make_media(work / "media", args.files, args.seconds), args.tasks)
        print(
            f"machine: {os.cpu_count()} CPUs; {args.tasks} items of {args.seconds:.0f} s media, extractors "
            f"{','.join(EXTRACTORS)}",
            flush=True,
        )
        if args.backend == "kubernetes":
            run_kubernetes(items, work, args)
            return
        for workers in args.workers:
            run_workers(items, work, workers, args)
        if args.rate:
            run_sustained(items, work, args.rate, args.duration)


if __name__ == "__main__":
    main()
