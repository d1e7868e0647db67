"""Soak benchmark of the local backend: mixed requests, killed workers, one killed service.

Not a test: it prints what happened. ``audioproc-api serve`` (local backend) gets an open-loop
stream of ``--rate`` requests per second for ``--duration`` seconds, a mix of

- submissions (``POST /process`` of short real files; some with ``?wait=true``),
- status reads (``GET /status/{id}`` of a task submitted earlier), listings (``GET /tasks``),
- health probes (``GET /healthz``),
- cancellations (``DELETE /tasks/{id}``),
- bad requests (non-finite numbers, malformed URIs, bad cursors): each must get a 4xx;

while one worker process is killed (SIGKILL) every ``--kill-every`` seconds and the service
itself is SIGKILLed once, at ``--service-kill-at`` seconds, and restarted at once on the same
state directory. Then the load stops and every task that was not cancelled is awaited.

    .venv/bin/python bench/soak.py                                  # 200 requests/s for 60 s
    .venv/bin/python bench/soak.py --rate 50 --duration 20          # a quick look

It prints the requests served per kind; p50/p99 latency of ``/healthz`` and ``/status`` while the
service was up (goal: p99 under 50 ms for the whole run); the 5xx count (goal 0); items submitted
against items completed, and items whose manifest was written more than once (goal: all completed,
none twice); and the service's descendant processes still alive after its SIGKILL (goal 0).

"Written more than once" is seen from the file system: every ``manifest.json`` that appears
(the storage renames it into place, last) is counted by a watcher on the output directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import watchfiles

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_test import Facade, make_media

EXTRACTORS = ["loudness", "spectral"]
#: Share of each kind of request in the mix (they sum to 1).
MIX = {
    "status": 0.40,
    "healthz": 0.20,
    "list": 0.10,
    "submit": 0.15,
    "wait": 0.03,
    "cancel": 0.04,
    "bad": 0.08,
}
#: Bad requests: (method, path, raw JSON body or None). Each must be answered with a 4xx.
BAD_REQUESTS = [
    ("POST", "/process", '{"input_uri": NaN, "video_id": "v"}'),
    ("POST", "/process", '{"input_uri": "/media/x.wav", "video_id": "v", "use_gpu": Infinity}'),
    ("POST", "/process", '{"input_uri": "http://localhost:99999/x.wav", "video_id": "v"}'),
    ("POST", "/process", '{"input_uri": "http://localhost:abc/x.wav", "video_id": "v"}'),
    ("POST", "/process", '{"input_uri": "/etc/passwd", "video_id": "v"}'),
    ("POST", "/process", '{"video_id": "v"}'),
    ("POST", "/batch", '{"items": []}'),
    ("GET", "/tasks?cursor=%C2%B2", None),
    ("GET", "/tasks?cursor=9223372036854775808", None),
]


@dataclass
class Outcome:
    kind: str
    started_s: float  # since the start of the run
    latency_s: float
    status: int | None  # None: no response (connection refused or reset, or a timeout)
    failure: str | None = None  # the transport error's class, when there was no response


@dataclass
class Run:
    """What the load generator saw, and what it submitted."""

    outcomes: list[Outcome] = field(default_factory=list)
    submitted: list[str] = field(default_factory=list)  # task ids that got a 200/202
    cancelled: set[str] = field(default_factory=set)
    worker_kills: int = 0
    down_between_s: tuple[float, float] | None = None  # the service's SIGKILL .. ready again
    orphans_after_kill: int = 0  # descendants alive 1 s after the service's SIGKILL
    orphans_gone_s: float | None = None  # when the last of them was gone, after the kill
    skipped: int = 0  # requests not sent because too many were in flight


def descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (Linux ``/proc``)."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children[ppid].append(int(entry.name))
    found, frontier = [], [pid]
    while frontier:
        frontier = [child for parent in frontier for child in children.get(parent, [])]
        found += frontier
    return found


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def worker_pids(service_pid: int) -> list[int]:
    """The service's worker processes: the leaves among its descendants, except the resource tracker."""
    below = descendants(service_pid)
    parents = set()
    for pid in below:
        try:
            parents.add(
                int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
            )
        except OSError:
            continue
    leaves = []
    for pid in below:
        try:
            cmdline = (Path("/proc") / str(pid) / "cmdline").read_bytes()
        except OSError:
            continue
        if pid not in parents and b"resource_tracker" not in cmdline:
            leaves.append(pid)
    return leaves


class ManifestWatcher:
    """Counts each ``manifest.json`` that appears under ``root``, per task folder and video id."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.appeared: Counter[str] = Counter()  # "<task_id>/<video_id>" -> times it appeared
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        for changes in watchfiles.watch(
            self.root,
            stop_event=self._stop,
            debounce=20,
            step=5,
            rust_timeout=200,
            yield_on_timeout=True,
        ):
            for change, path in changes:
                if change is watchfiles.Change.added and path.endswith("/manifest.json"):
                    self.appeared[str(Path(path).parent.relative_to(self.root))] += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class Soak:
    def __init__(self, args: argparse.Namespace, work: Path, files: list[Path]) -> None:
        self.args = args
        self.files = files
        self.output = work / "out"
        self.output.mkdir()
        self.env = {
            "API_BACKEND": "local",
            "API_STATE_DIR": str(work / "state"),
            "OUTPUT_URI": self.output.as_uri(),
            "ALLOWED_ROOTS": json.dumps([str(files[0].parent)]),
            "MAX_CONCURRENT_VIDEOS": str(args.workers),
            "USE_GPU": "false",
        }
        self.work = work
        self.facade = Facade(self.env, work / "facade-0.log")
        self.run = Run()
        self.t0 = time.perf_counter()
        self.rng = random.Random(args.seed)
        self.counter = 0

    def now(self) -> float:
        return time.perf_counter() - self.t0

    # -- requests ------------------------------------------------------------------------

    def request_of(self, kind: str) -> tuple[str, str, dict | str | None]:
        """(method, path, body) of one request of ``kind``."""
        if kind in ("submit", "wait"):
            self.counter += 1
            body = {
                "input_uri": str(self.rng.choice(self.files)),
                "video_id": f"v{self.counter:06d}",
                "extractors": EXTRACTORS,
                "use_gpu": False,
            }
            return "POST", "/process?wait=true&timeout=5" if kind == "wait" else "/process", body
        if kind in ("status", "cancel") and self.run.submitted:
            task_id = self.rng.choice(self.run.submitted[-500:])
            return (
                ("GET", f"/status/{task_id}?items_limit=10", None)
                if kind == "status"
                else ("DELETE", f"/tasks/{task_id}", None)
            )
        if kind == "list":
            return "GET", "/tasks?limit=20", None
        if kind == "bad":
            return self.rng.choice(BAD_REQUESTS)
        return "GET", "/healthz", None

    async def send(self, client: httpx.AsyncClient, kind: str) -> None:
        method, path, body = self.request_of(kind)
        started = self.now()
        status: int | None = None
        failure: str | None = None
        try:
            if isinstance(body, str):
                response = await client.request(
                    method, path, content=body, headers={"content-type": "application/json"}
                )
            else:
                response = await client.request(method, path, json=body)
            status = response.status_code
            if kind in ("submit", "wait") and status in (200, 202):
                self.run.submitted.append(response.json()["task_id"])
            if kind == "cancel" and status == 200:
                self.run.cancelled.add(path.rsplit("/", 1)[1])
        except httpx.TransportError as exc:
            failure = type(exc).__name__
        self.run.outcomes.append(Outcome(kind, started, self.now() - started, status, failure))

    async def load(self) -> None:
        kinds, weights = zip(*MIX.items(), strict=True)
        interval = 1 / self.args.rate
        in_flight: set[asyncio.Task] = set()
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=self.facade.url, timeout=30, limits=limits) as client:
            n = 0
            while self.now() < self.args.duration:
                n += 1
                if len(in_flight) >= 1000:
                    self.run.skipped += 1
                else:
                    task = asyncio.create_task(
                        self.send(client, self.rng.choices(kinds, weights)[0])
                    )
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                await asyncio.sleep(max(0.0, n * interval - self.now()))
            await asyncio.gather(*in_flight)

    # -- faults ---------------------------------------------------------------------------

    async def faults(self) -> None:
        kill_at = [
            t
            for t in np.arange(self.args.kill_every, self.args.duration, self.args.kill_every)
            if abs(t - self.args.service_kill_at) > 1
        ]
        events = sorted([(t, "worker") for t in kill_at] + [(self.args.service_kill_at, "service")])
        for at, what in events:
            await asyncio.sleep(max(0.0, at - self.now()))
            if what == "worker":
                workers = worker_pids(self.facade.process.pid)
                if workers:
                    os.kill(self.rng.choice(workers), signal.SIGKILL)
                    self.run.worker_kills += 1
            else:
                await self.kill_service()

    async def kill_service(self) -> None:
        below = descendants(self.facade.process.pid)
        killed_at = self.now()
        self.facade.process.send_signal(signal.SIGKILL)
        self.facade.process.wait()
        orphans_check = asyncio.create_task(self.watch_orphans(below, killed_at))
        # restart at once, as a supervisor would, on the same state directory and output
        self.facade = await asyncio.to_thread(
            Facade, self.env, self.work / "facade-1.log", self.facade.port
        )
        self.run.down_between_s = (killed_at, self.now())
        await orphans_check

    async def watch_orphans(self, pids: list[int], killed_at: float) -> None:
        while self.now() - killed_at < 10 and any(alive(pid) for pid in pids):
            if self.now() - killed_at >= 1 and not self.run.orphans_after_kill:
                self.run.orphans_after_kill = sum(alive(pid) for pid in pids)
            await asyncio.sleep(0.05)
        if self.now() - killed_at >= 1 and not self.run.orphans_after_kill:
            self.run.orphans_after_kill = sum(alive(pid) for pid in pids)
        self.run.orphans_gone_s = (
            None if any(alive(pid) for pid in pids) else self.now() - killed_at
        )

    # -- the run --------------------------------------------------------------------------

    async def soak(self) -> None:
        await asyncio.gather(self.load(), self.faults())

    def drain(self) -> dict[str, str]:
        """Wait for every task that was not cancelled; their final statuses."""
        pending = [t for t in dict.fromkeys(self.run.submitted) if t not in self.run.cancelled]
        final: dict[str, str] = {}
        deadline = time.monotonic() + self.args.drain_timeout
        last_report = 0.0
        with httpx.Client(base_url=self.facade.url, timeout=30) as client:
            while pending and time.monotonic() < deadline:
                if time.monotonic() - last_report > 10:
                    print(f"  waiting for {len(pending)} tasks ...", file=sys.stderr, flush=True)
                    last_report = time.monotonic()
                still = []
                for task_id in pending:
                    response = client.get(f"/status/{task_id}", params={"items_limit": 1})
                    status = (
                        response.json().get("status")
                        if response.status_code == 200
                        else f"http {response.status_code}"
                    )
                    if status in ("pending", "processing"):
                        still.append(task_id)
                    else:
                        final[task_id] = status
                pending = still
                time.sleep(0.5)
        final.update(dict.fromkeys(pending, "unfinished"))
        return final


def percentiles_ms(outcomes: list[Outcome]) -> str:
    latencies = np.array([o.latency_s for o in outcomes if o.status is not None]) * 1000
    if not len(latencies):
        return "no responses"
    return f"p50 {np.percentile(latencies, 50):6.1f} ms  p99 {np.percentile(latencies, 99):6.1f} ms  max {latencies.max():7.1f} ms"


def report(soak: Soak, final: dict[str, str], watcher: ManifestWatcher) -> None:
    run = soak.run
    down = run.down_between_s or (float("inf"), float("inf"))
    up = [o for o in run.outcomes if not (down[0] <= o.started_s <= down[1] + 1)]
    served = [o for o in run.outcomes if o.status is not None]
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {soak.args.rate} requests/s for "
        f"{soak.args.duration:.0f} s, {soak.args.workers} workers, {len(soak.files)} files of "
        f"{soak.args.seconds:g} s, extractors {','.join(EXTRACTORS)}"
    )
    unanswered_up = Counter(o.failure for o in up if o.status is None)
    print(
        f"requests: {len(run.outcomes)} sent, {len(served)} answered, "
        f"{len(run.outcomes) - len(served)} unanswered (service down {down[0]:.1f}-{down[1]:.1f} s; "
        f"while up: {dict(unanswered_up) or 0}), {run.skipped} not sent (1,000 in flight)"
    )
    by_kind = Counter(o.kind for o in served)
    print("answered by kind: " + ", ".join(f"{kind} {by_kind[kind]}" for kind in MIX))
    for kind in ("healthz", "status", "submit", "list"):
        goal = "   (goal: p99 < 50 ms)" if kind in ("healthz", "status") else ""
        print(f"{kind:<8} while up: {percentiles_ms([o for o in up if o.kind == kind])}{goal}")
    windows = []
    for start in range(0, int(soak.args.duration), 10):
        probes = [
            o.latency_s
            for o in up
            if o.kind == "healthz" and o.status and start <= o.started_s < start + 10
        ]
        windows.append(
            f"{start}-{start + 10} s {np.percentile(probes, 99) * 1000:.0f}"
            if probes
            else f"{start} s -"
        )
    print("healthz p99 (ms) per 10 s: " + ", ".join(windows))
    fives = [o for o in served if o.status >= 500]
    bad_ok = [o for o in served if o.kind == "bad" and not 400 <= o.status < 500]
    print(
        f"5xx: {len(fives)} (goal 0){'  ' + str(Counter((o.kind, o.status) for o in fives)) if fives else ''}; "
        f"bad requests not answered 4xx: {len(bad_ok)}"
    )
    outcomes = Counter(final.values())
    print(
        f"tasks: {len(set(run.submitted))} submitted, {len(run.cancelled)} cancelled, {len(final)} awaited: "
        + ", ".join(f"{status} {n}" for status, n in outcomes.most_common())
    )
    twice = {key: n for key, n in watcher.appeared.items() if n > 1}
    print(
        f"manifests written: {sum(watcher.appeared.values())} for {len(watcher.appeared)} items; "
        f"items written more than once: {len(twice)} (goal 0){'  ' + str(sorted(twice)[:5]) if twice else ''}"
    )
    gone = (
        "still alive 10 s later"
        if run.orphans_gone_s is None
        else f"the last gone {run.orphans_gone_s:.2f} s after"
    )
    print(
        f"worker kills: {run.worker_kills}; service SIGKILL at {down[0]:.1f} s, ready again {down[1] - down[0]:.1f} s "
        f"later; its processes alive 1 s after the kill: {run.orphans_after_kill} (goal 0), {gone}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--workers", type=int, default=2, help="MAX_CONCURRENT_VIDEOS")
    parser.add_argument(
        "--kill-every", type=float, default=10.0, help="seconds between worker kills"
    )
    parser.add_argument(
        "--service-kill-at", type=float, default=30.0, help="when to SIGKILL the service"
    )
    parser.add_argument("--files", type=int, default=6, help="distinct media files")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each file")
    parser.add_argument(
        "--drain-timeout", type=float, default=600.0, help="seconds to wait for the tasks after"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="audioproc-soak-") as tmp:
        work = Path(tmp)
        (work / "media").mkdir()
        files = make_media(work / "media", args.files, args.seconds)
        soak = Soak(args, work, files)
        watcher = ManifestWatcher(soak.output)
        try:
            print(
                f"  {args.rate:g} requests/s for {args.duration:g} s ...",
                file=sys.stderr,
                flush=True,
            )
            asyncio.run(soak.soak())
            final = soak.drain()
            time.sleep(0.5)  # let the watcher see the last renames
        finally:
            watcher.stop()
            soak.facade.stop()
        report(soak, final, watcher)


if __name__ == "__main__":
    main()
