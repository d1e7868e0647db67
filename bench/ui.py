"""Benchmark of the job browser (/ui) in headless Chromium: the tasks list of 1,000 tasks.

Not a test: it prints numbers. A served facade (local backend) is given ``--tasks`` tasks
(written through the backend's own submit before the service starts; most point at a missing
file and fail at once, ``--completed`` run the loudness extractor on a real file), and once all
have finished, Debian's Chromium (Playwright) loads, ``--repeat`` times each, in a fresh page:

- ``/ui?limit=N``: the list of all N tasks, until every row is in the table (the goal: under 1 s);
- ``/ui?limit=50``: the default page;
- baselines in the same run: ``/ui?status=pending`` (the same page and scripts, no rows) and,
  from an open page, ``fetch`` of the same JSON the list needs (2 pages of 500) without drawing.

and the script weight of each page (the goal: no page loads more than 300 KB of script).

    .venv/bin/python bench/ui.py                       # 1,000 tasks, 5 loads each
    .venv/bin/python bench/ui.py --tasks 200 --repeat 3
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import Page, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_test import Facade, make_media

from audioproc.models.audiojob import ExtractorName
from audioproc_api.backends.base import Submission, new_task_id
from audioproc_api.backends.local import LocalBackend
from audioproc_api.routes import build_spec
from audioproc_api.schemas import BatchItem, TaskKind
from audioproc_api.settings import ApiSettings

CHROMIUM = "/usr/bin/chromium"
PAGES = ["/ui", "/ui/submit", "/ui/tasks/{task}", "/ui/tasks/{task}/{video}"]


def fill_store(state: Path, output: str, media: Path, n_tasks: int, n_completed: int) -> None:
    """``n_tasks`` queued tasks in the local backend's store, as POST /process would make them."""
    settings = ApiSettings(
        api_backend="local",
        api_state_dir=state,
        output_uri=output,
        allowed_roots=[media.parent],
        use_gpu=False,
    )
    backend = LocalBackend(settings, output)
    try:
        for i in range(n_tasks):
            real = i < n_completed
            uri = str(media) if real else str(media.parent / f"missing-{i}.wav")
            item = BatchItem(
                input_uri=uri, video_id=f"v{i:04d}", extractors=[ExtractorName.loudness]
            )
            spec = build_spec([item], False, 1, output)
            backend.submit(
                Submission(new_task_id(TaskKind.process), TaskKind.process, spec, f"bench-{i}")
            )
    finally:
        backend.close()


def wait_all_finished(url: str, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        unfinished = sum(
            len(httpx.get(f"{url}/tasks", params={"status": s, "limit": 500}).json()["tasks"])
            for s in ("pending", "processing")
        )
        if unfinished == 0:
            return
        time.sleep(1)
    raise RuntimeError(f"tasks still unfinished after {timeout_s} s")


def timed_load(page: Page, url: str, rows: int) -> tuple[float, dict[str, float]]:
    """Seconds from navigation to the frame after the table holds ``rows`` rows, and the page's
    own marks (seconds since its navigation started): scripts run, JSON fetched, rows built,
    frame painted."""
    started = time.perf_counter()
    page.goto(url)
    page.wait_for_selector(f"body[data-loaded='{rows}']", timeout=60_000)
    elapsed = time.perf_counter() - started
    marks = page.evaluate("""() => Object.fromEntries(
        ["ap:fetch", "ap:fetched", "ap:drawn", "ap:painted"].map(name =>
            [name.slice(3), performance.getEntriesByName(name).at(-1).startTime / 1000]))""")
    return elapsed, marks


def timed_fetch(page: Page, n_tasks: int) -> float:
    """Seconds for the page's own fetch of the JSON the list of ``n_tasks`` needs."""
    return float(
        page.evaluate(
            """async (n) => {
        const started = performance.now();
        let cursor = null, got = 0;
        do {
            const limit = String(Math.min(500, n - got));
            const query = new URLSearchParams({order: "newest", limit});
            if (cursor) query.set("cursor", cursor);
            const page = await (await fetch(`/tasks?${query}`)).json();
            got += page.tasks.length; cursor = page.next_cursor;
        } while (cursor && got < n);
        return (performance.now() - started) / 1000;
    }""",
            n_tasks,
        )
    )


def script_weight(url: str, page: str) -> int:
    html = httpx.get(url + page).text
    return sum(
        len(httpx.get(url + src).content) for src in re.findall(r'<script src="([^"]+)"', html)
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--completed", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "media").mkdir()
        [media] = make_media(root / "media", 1, 4.0)
        output = (root / "out").as_uri()
        started = time.perf_counter()
        fill_store(root / "state", output, media, args.tasks, args.completed)
        env = {
            "API_BACKEND": "local",
            "API_STATE_DIR": str(root / "state"),
            "OUTPUT_URI": output,
            "ALLOWED_ROOTS": f'["{root / "media"}"]',
            "USE_GPU": "false",
            "MAX_CONCURRENT_VIDEOS": "2",
        }
        facade = Facade(env, root / "facade.log")
        try:
            wait_all_finished(facade.url)
            print(
                f"{args.tasks} tasks ({args.completed} completed, the rest failed) ready in "
                f"{time.perf_counter() - started:.1f} s"
            )
            a_task = httpx.get(
                f"{facade.url}/tasks", params={"status": "completed", "limit": 1}
            ).json()["tasks"][0]
            video = httpx.get(f"{facade.url}/status/{a_task['task_id']}").json()["items"][0][
                "video_id"
            ]
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM)
                context = browser.new_context(viewport={"width": 1000, "height": 800})
                cases = {
                    f"/ui?limit={args.tasks} (all rows)": (f"/ui?limit={args.tasks}", args.tasks),
                    "/ui (default page, 50 rows)": ("/ui", min(50, args.tasks)),
                    "baseline: /ui?status=pending (no rows)": ("/ui?status=pending", 0),
                }
                timings: dict[str, list[float]] = {name: [] for name in cases}
                marks: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
                timings["baseline: fetch the same JSON, no drawing"] = []
                for _ in range(args.repeat):
                    for name, (path, rows) in cases.items():
                        page = context.new_page()
                        elapsed, page_marks = timed_load(page, facade.url + path, rows)
                        timings[name].append(elapsed)
                        marks[name].append(page_marks)
                        if rows == 0:
                            timings["baseline: fetch the same JSON, no drawing"].append(
                                timed_fetch(page, args.tasks)
                            )
                        page.close()
                browser.close()
            print(
                f"\nheadless Chromium ({CHROMIUM}), {args.repeat} loads each, fresh page each time:"
            )
            print(f"  {'what':<48} {'median s':>9} {'min s':>7} {'max s':>7}")
            for name, values in timings.items():
                median = statistics.median(values)
                print(f"  {name:<48} {median:9.3f} {min(values):7.3f} {max(values):7.3f}")
            print(
                "\nwithin the page, medians, s since navigation start: "
                "scripts run, JSON fetched, rows built, frame painted"
            )
            for name, entries in marks.items():
                steps = [
                    statistics.median(m[k] for m in entries)
                    for k in ("fetch", "fetched", "drawn", "painted")
                ]
                print(f"  {name:<48} " + " ".join(f"{v:7.3f}" for v in steps))
            print("\nscript per page (goal: < 300 KB):")
            for page_path in PAGES:
                path = page_path.format(task=a_task["task_id"], video=video)
                print(f"  {page_path:<28} {script_weight(facade.url, path) / 1024:7.1f} KB")
        finally:
            facade.stop()


if __name__ == "__main__":
    main()
