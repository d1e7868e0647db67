"""/ui in a real headless Chromium (Debian's, driven by Playwright) against a real served facade
on the local backend: a generated drum-and-tone file goes through the form, its progress is
watched to 100 %, and the item's plots are checked against its manifest and .npy artifacts.

Set UI_SCREENSHOTS to a folder to keep screenshots of the views (docs/ui.md uses them).
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest

from audioproc import samples
from audioproc.models import Manifest
from tests.facade_support import FAST_EXTRACTORS, Media, ServedFacade, busy_batch, served

pytestmark = pytest.mark.slow

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1000, "height": 760}
EXPECTED_LOAD_ERROR = "Failed to load resource: the server responded with a status of 4"
SCREENSHOTS = Path(os.environ["UI_SCREENSHOTS"]) if os.environ.get("UI_SCREENSHOTS") else None

if not CHROMIUM.exists():
    pytest.skip(
        f"no Chromium at {CHROMIUM} (as root: `make system-deps` installs Debian's)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api")


def write_beats(path: Path, seconds: float = 8.0, rate: int = 22050) -> Path:
    """Drums at 120 BPM under a 220 Hz tone: beats, loudness and a pitch contour to draw."""
    audio = 0.6 * samples.drum_pattern(seconds, rate, 120.0) + samples.tone(
        seconds, rate, f0=220.0, amplitude=0.3
    )
    return samples.write_audio(path, audio, rate)


def screenshot(page: sync_api.Page, name: str, height: int | None = None) -> None:
    """What the viewport shows (``height`` px of it, if given), as a PNG of at most 64 colours
    (small enough for docs/)."""
    if SCREENSHOTS is None:
        return
    from PIL import Image

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    viewport = page.viewport_size
    if height is not None and viewport is not None:
        page.set_viewport_size({"width": viewport["width"], "height": height})
    image = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    if viewport is not None:
        page.set_viewport_size(viewport)
    image.quantize(colors=64, dither=Image.Dither.NONE).save(
        SCREENSHOTS / f"{name}.png", optimize=True
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def facade(tmp_path_factory: pytest.TempPathFactory, media: Media) -> Iterator[ServedFacade]:
    with served(tmp_path_factory.mktemp("ui"), media) as service:
        yield service


@pytest.fixture
def page(browser: sync_api.Browser) -> Iterator[sync_api.Page]:
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # an API's 4xx answer is logged as a failed load: expected (a 422, a 401); anything else is not
    page.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and not message.text.startswith(EXPECTED_LOAD_ERROR)
            else None
        ),
    )
    yield page
    context.close()
    assert errors == [], errors  # no script error, no CSP violation ("Refused to ...")


def drawn_line(page: sync_api.Page, plot_id: str) -> tuple[np.ndarray, np.ndarray]:
    """The data (x, y) of the plot's polyline, read back through the svg's scales."""
    geometry = page.eval_on_selector(
        f"#{plot_id}",
        """svg => ({
        d: Object.fromEntries(Object.entries(svg.dataset).map(([k, v]) => [k, parseFloat(v)])),
        points: [...svg.querySelectorAll('polyline.series')].flatMap(
            line => line.getAttribute('points').split(' ').map(p => p.split(',').map(Number))),
    })""",
    )
    d, points = geometry["d"], np.array(geometry["points"])
    x = d["xMin"] + (points[:, 0] - d["left"]) / d["width"] * (d["xMax"] - d["xMin"])
    y = d["yMin"] + (d["top"] + d["height"] - points[:, 1]) / d["height"] * (d["yMax"] - d["yMin"])
    return x, y


def test_submit_watch_progress_and_read_the_plots(
    page: sync_api.Page, facade: ServedFacade, media: Media, browser: sync_api.Browser
) -> None:
    source = write_beats(media.root / "beats.wav")
    page.goto(f"{facade.url}/ui/submit")
    page.get_by_label("Input URI").fill(str(source))
    page.wait_for_selector("#extractor-tempo")
    assert page.get_by_label("clap 1.0.0").is_disabled()  # no checkpoint here: said, not offered
    screenshot(page, "submit")
    page.get_by_role("button", name="Submit").click()
    page.wait_for_url(f"{facade.url}/ui/tasks/**")
    task_id = page.url.rsplit("/", 1)[1]

    seen: set[str] = set()
    for _ in range(1800):  # the page polls the API; read what it shows until the task is done
        seen.add(page.inner_text("#progress-text"))
        if page.get_attribute("body", "data-status") in ("completed", "failed"):
            break
        page.wait_for_timeout(100)
    assert page.get_attribute("body", "data-status") == "completed"
    assert page.inner_text("#progress-text") == "100 %"
    assert float(page.get_attribute("#progress", "value") or 0) == 1.0
    assert (
        page.inner_text("#items tbody tr[data-video='beats'] [data-label='Status']") == "completed"
    )
    screenshot(page, "task")
    assert "0 %" in seen or len(seen) == 1  # started below 100 % unless done before the first poll

    page.goto(f"{facade.url}/ui")
    row = page.locator(f"tr[data-task='{task_id}']")
    assert row.locator(".pct").inner_text() == "100 %"
    assert "1 ok" in row.locator(".counts").inner_text()
    screenshot(page, "tasks")

    page.goto(f"{facade.url}/ui/tasks/{task_id}")
    page.get_by_role("link", name="features").click()
    page.wait_for_selector("body[data-loaded='1']")
    screenshot(page, "item", height=1450)

    status = httpx.get(f"{facade.url}/status/{task_id}").json()
    manifest_path = Path(urlparse(status["items"][0]["manifest_uri"]).path)
    manifest = Manifest.model_validate_json(manifest_path.read_text())
    records = {r.name: r for r in manifest.extractors}
    assert set(records) >= {"loudness", "tempo", "pitch", "mfcc"}

    def artifact(extractor: str, name: str) -> np.ndarray:
        return np.load(manifest_path.parent / records[extractor].artifacts[name])

    beat_count = records["tempo"].features["beat_count"]
    assert beat_count > 8  # 120 BPM over 8 s
    assert page.locator("#plot-waveform line.marker").count() == beat_count
    drawn_beats = [
        float(v)
        for v in page.eval_on_selector_all(
            "#plot-waveform line.marker", "lines => lines.map(l => l.dataset.x)"
        )
    ]
    np.testing.assert_allclose(drawn_beats, artifact("tempo", "beats"), atol=1e-9)

    x, lufs = drawn_line(page, "plot-loudness")
    expected = artifact("loudness", "short_term_lufs")
    assert lufs.size == expected.size
    np.testing.assert_allclose(lufs, expected, atol=0.01)
    np.testing.assert_allclose(x, 1.5 + 0.1 * np.arange(expected.size), atol=0.01)

    envelope = artifact("loudness", "peak_envelope")
    assert (
        page.eval_on_selector(
            "#plot-waveform polygon", "p => p.getAttribute('points').split(' ').length"
        )
        == 2 * envelope.size
    )
    _, f0 = drawn_line(page, "plot-pitch")
    voiced_f0 = artifact("pitch", "f0_hz")[artifact("pitch", "voiced").astype(bool)]
    np.testing.assert_allclose(np.sort(f0), np.sort(voiced_f0[voiced_f0 > 0]), rtol=1e-3)
    bars = page.eval_on_selector_all(
        "#plot-mfcc rect.bar", "rects => rects.map(r => parseFloat(r.dataset.value))"
    )
    np.testing.assert_allclose(bars, records["mfcc"].features["mfcc_mean"], rtol=1e-6)

    # keyboard: focus a plot, step through it with the arrow keys
    page.focus("#plot-loudness")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert page.inner_text("#plot-loudness + output").startswith(
        f"{1.6:g} s: {float(expected[1]):.4g} LUFS"
    )
    feature = page.locator("section[data-extractor='tempo'] tr", has_text="beat_count")
    assert feature.locator("td").inner_text() == str(beat_count)

    # phone width: no sideways scrolling on any of the views
    phone = browser.new_context(viewport=PHONE).new_page()
    for path in ("/ui", f"/ui/tasks/{task_id}", f"/ui/tasks/{task_id}/beats", "/ui/submit"):
        phone.goto(f"{facade.url}{path}")
        phone.wait_for_load_state("networkidle")
        assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], path
    phone.goto(f"{facade.url}/ui/tasks/{task_id}/beats")
    phone.wait_for_selector("body[data-loaded='1']")
    screenshot(phone, "item-phone")
    phone.context.close()


def test_a_bad_uri_shows_the_apis_validation_message(
    page: sync_api.Page, facade: ServedFacade
) -> None:
    body = {"input_uri": "/etc/passwd", "video_id": "passwd"}
    api_message = httpx.post(f"{facade.url}/process", json=body).json()["detail"][0]["msg"]
    tasks_before = httpx.get(f"{facade.url}/tasks", params={"limit": 500}).json()["tasks"]
    page.goto(f"{facade.url}/ui/submit")
    page.wait_for_selector("#extractor-tempo")
    page.get_by_label("Input URI").fill("/etc/passwd")
    page.get_by_role("button", name="Submit").click()
    errors = page.get_by_role("alert").filter(has_text="refused")
    errors.wait_for()
    assert f"input_uri: {api_message}" in errors.inner_text()
    assert page.url.endswith("/ui/submit")
    tasks_after = httpx.get(f"{facade.url}/tasks", params={"limit": 500}).json()["tasks"]
    assert len(tasks_after) == len(tasks_before)  # nothing was queued


def test_cancel_asks_first_then_cancels(
    page: sync_api.Page, facade: ServedFacade, media: Media
) -> None:
    task_id = httpx.post(f"{facade.url}/batch", json=busy_batch(media, items=200)).json()["task_id"]
    page.goto(f"{facade.url}/ui")
    button = page.get_by_role("button", name=f"Cancel task {task_id}")
    answers = iter([False, True])
    page.on("dialog", lambda dialog: dialog.accept() if next(answers) else dialog.dismiss())

    button.click()  # dismissed: nothing happens
    page.wait_for_timeout(300)
    assert httpx.get(f"{facade.url}/status/{task_id}").status_code == 200
    page.get_by_role("button", name=f"Cancel task {task_id}").click()
    page.get_by_text(f"Task {task_id} cancelled.").wait_for()
    assert httpx.get(f"{facade.url}/status/{task_id}").status_code == 404
    assert page.locator(f"tr[data-task='{task_id}']").count() == 0


def test_with_tokens_a_wrong_token_is_refused_and_each_sees_its_own(
    browser: sync_api.Browser,
    tmp_path: Path,
    media: Media,
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("alice:alice-token\nbob:bob-token\n")
    with served(tmp_path, media, API_TOKENS_FILE=str(tokens)) as service:
        body = {"input_uri": str(media.good[0]), "extractors": FAST_EXTRACTORS}
        mine = httpx.post(
            f"{service.url}/process",
            json=body | {"video_id": "a"},
            headers={"Authorization": "Bearer alice-token"},
        ).json()["task_id"]
        theirs = httpx.post(
            f"{service.url}/process",
            json=body | {"video_id": "b"},
            headers={"Authorization": "Bearer bob-token"},
        ).json()["task_id"]
        context = browser.new_context(viewport=DESKTOP)
        page = context.new_page()
        page.goto(f"{service.url}/ui")
        page.get_by_text("This service needs a token.").wait_for()
        page.get_by_label("Bearer token").fill("wrong-token")
        page.get_by_role("button", name="Use token").click()
        page.get_by_text("That token was refused.").wait_for()
        assert page.locator("tr[data-task]").count() == 0

        page.get_by_label("Bearer token").fill("alice-token")
        page.get_by_role("button", name="Use token").click()
        page.locator(f"tr[data-task='{mine}']").wait_for()
        assert page.locator(f"tr[data-task='{theirs}']").count() == 0
        page.goto(f"{service.url}/ui/tasks/{theirs}")  # the token stays for the tab's session
        page.get_by_text(f"No task {theirs} (or not yours).").wait_for()
        context.close()
    shutil.rmtree(tmp_path / "out", ignore_errors=True)


@pytest.fixture
def kubernetes_facade(tmp_path: Path) -> Iterator[str]:
    """The facade on the kubernetes backend over test_ui_pages' stand-ins (no cluster), served
    by uvicorn in a thread; its base URL."""
    import socket
    import threading
    import time

    import uvicorn

    from tests.test_ui_pages import kubernetes_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        kubernetes_app(tmp_path).app, host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="kubernetes-facade", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_task_page_on_kubernetes_shows_the_audiojobs_jobs_and_events(
    kubernetes_facade: str, page: sync_api.Page
) -> None:
    page.goto(f"{kubernetes_facade}/ui/tasks/batc-b")
    page.locator("#events-section").wait_for(state="visible")
    assert page.locator("#jobs-audiojob").text_content() == "default/batc-b"
    jobs = page.locator("#jobs tbody tr")
    assert [jobs.nth(i).get_attribute("data-job") for i in range(jobs.count())] == [
        "batc-b-c0",
        "batc-b-c1",
    ]
    cells = [c.strip() for c in jobs.nth(1).locator("td").all_text_contents()]
    assert cells == ["batc-b-c1", "1", "0", "0", "1", "no"]
    events = page.locator("#events tbody tr")
    assert [events.nth(i).get_attribute("data-reason") for i in range(events.count())] == [
        "Placed",
        "JobCreated",
        "JobCreated",
    ]
    assert "Job batc-b-c1" in events.nth(2).text_content()

    page.goto(f"{kubernetes_facade}/ui/tasks/batc-a")  # pending: no Jobs, no Events yet
    page.locator("body[data-status]").wait_for(state="attached")  # both calls answered
    assert page.locator("#jobs-section").is_hidden() and page.locator("#events-section").is_hidden()
