"""lamina studio end to end, in a real headless Chromium (Debian's ``chromium`` package, driven by Playwright).

The test starts ``lamina studio`` as a separate process (or uses ``LAMINA_STUDIO_URL``), then
does what a user does: upload a photo, draw a box with two clicks, take it apart, hide a
layer, download the PSD and open it with psd-tools; upload a text file named .png and a
20,000 x 20,000 image and see the message while the page keeps working; BFS: add two objects
to a background and download (or see that BFS is not installed). A screenshot of each step
goes to ``LAMINA_STUDIO_SCREENSHOTS`` (default: the test's tmp folder). ``LAMINA_STUDIO_PHOTO=PATH`` and
``LAMINA_STUDIO_BOX=x0,y0,x1,y1`` run the photo test on your own photo (the README's screenshots
come from it on scikit-image's ``coffee.png`` with box 75,15,482,390); ``LAMINA_STUDIO_ARGS`` adds
options to the ``lamina studio`` command the test starts (e.g. ``--bfs-model DIR``).

Skipped, with the reason, where there is no Chromium binary (``LAMINA_CHROMIUM`` or ``chromium``
on the PATH), no Playwright or no gradio; ``.ci/run`` installs Chromium so CI runs it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lamina.data import generate_scene

CHROMIUM = os.environ.get("LAMINA_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="no Chromium binary (apt-get install chromium, or set LAMINA_CHROMIUM)")
playwright_api = pytest.importorskip("playwright.sync_api",
                                     reason="Playwright is not installed (pip install playwright)")
pytest.importorskip("gradio", reason="gradio is not installed (pip install 'lamina[studio]')")

#: Seconds a model call may take in the page (CPU, shared machine: generous).
WORK_TIMEOUT_MS = 300_000
#: Seconds for the studio process to start serving.
START_TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, process: subprocess.Popen | None, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"lamina studio exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1.0)
    raise RuntimeError(f"lamina studio did not answer at {url} within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def studio_url(tmp_path_factory):
    """A running studio: ``LAMINA_STUDIO_URL``, or ``lamina studio`` started here on a free port of 127.0.0.1."""
    if os.environ.get("LAMINA_STUDIO_URL"):
        yield os.environ["LAMINA_STUDIO_URL"].rstrip("/") + "/"
        return
    port = _free_port()
    log = tmp_path_factory.mktemp("studio") / "studio.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "LAMINA_PROGRESS": "0"}
    command = [sys.executable, "-c", "from lamina.cli import main; main()", "studio", "--host", "127.0.0.1",
               "--port", str(port), "--device", "cpu", "--max-pixels", "4000000",
               *os.environ.get("LAMINA_STUDIO_ARGS", "").split()]  # e.g. --bfs-model DIR
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


@pytest.fixture
def shots(tmp_path):
    """``shot(page, name)`` saves a full-page screenshot as a test artifact."""
    folder = Path(os.environ.get("LAMINA_STUDIO_SCREENSHOTS", tmp_path / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)

    def shot(page, name: str) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    shot.folder = folder
    return shot


def _photo(tmp_path: Path, seed: int = 1) -> tuple[Path, tuple[int, int, int, int]]:
    if seed == 1 and os.environ.get("LAMINA_STUDIO_PHOTO"):
        box = tuple(int(v) for v in os.environ["LAMINA_STUDIO_BOX"].split(","))
        return Path(os.environ["LAMINA_STUDIO_PHOTO"]), box
    scene = generate_scene(seed)
    path = tmp_path / f"photo_{seed}.png"
    Image.fromarray((scene.composite * 255).round().astype(np.uint8)).save(path)
    return path, scene.box


def _status(page, text: str, timeout: float = 60_000) -> None:
    page.locator("#lamina-status").get_by_text(text, exact=False).wait_for(timeout=timeout)


def _click_image_pixel(page, selector: str, x: float, y: float) -> None:
    """Click pixel ``(x, y)`` of the image shown in ``selector`` (centred, object-fit contain or scale-down)."""
    img = page.locator(f"{selector} img").first
    img.wait_for()
    # The page may be swapping the image (a new frame after the last click): wait until one is decoded.
    page.wait_for_function("s => { const e = document.querySelector(s); return e && e.complete && e.naturalWidth; }",
                           arg=f"{selector} img")
    width, height, fit = img.evaluate("e => [e.naturalWidth, e.naturalHeight, getComputedStyle(e).objectFit]")
    natural = (width, height)
    box = img.bounding_box()
    scale = min(box["width"] / natural[0], box["height"] / natural[1])
    if fit == "scale-down":
        scale = min(scale, 1.0)
    left = box["x"] + (box["width"] - natural[0] * scale) / 2
    top = box["y"] + (box["height"] - natural[1] * scale) / 2
    page.mouse.click(left + (x + 0.5) * scale, top + (y + 0.5) * scale)


def _upload(page, selector: str, path: Path) -> None:
    """Click an upload button and pick ``path`` in the file chooser, as a user does."""
    with page.expect_file_chooser() as chooser:
        page.locator(selector).click()
    chooser.value.set_files(str(path))


def _toast(page, text: str) -> None:
    page.get_by_text(text, exact=False).first.wait_for(timeout=60_000)
    page.wait_for_timeout(600)  # let the message finish fading in before a screenshot


def _close_toasts(page) -> None:
    for button in page.locator(".toast-close").all():
        try:
            button.click(timeout=2_000)
        except playwright_api.Error:
            pass


def _download(page, tmp_path: Path, fmt_label: str) -> Path:
    page.locator("#lamina-format").get_by_text(fmt_label, exact=False).click()
    page.locator("#lamina-export").click()
    _status(page, "ready")
    link = page.locator("#lamina-download a").first
    link.wait_for()
    with page.expect_download() as info:
        link.click()
    target = tmp_path / info.value.suggested_filename
    info.value.save_as(str(target))
    return target


def test_photo_to_edited_psd_in_the_browser(studio_url, browser, shots, tmp_path):
    from psd_tools import PSDImage

    photo, box = _photo(tmp_path)
    width, height = Image.open(photo).size
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page.goto(studio_url)
    page.get_by_text("lamina studio").first.wait_for(timeout=60_000)
    shots(page, "01-start")

    _upload(page, "#lamina-photo-file", photo)
    _status(page, f"Photo {width}x{height}")
    # The photo fits the preview (1024 px), so the shown image's pixels are the photo's pixels.
    _click_image_pixel(page, "#lamina-photo", box[0], box[1])
    _status(page, "opposite corner")
    _click_image_pixel(page, "#lamina-photo", box[2], box[3])
    _status(page, "Box 1 set")
    typed = page.locator("#lamina-boxes textarea, #lamina-boxes input").first.input_value()
    drawn = [int(v) for v in typed.split(",")]
    assert all(abs(a - b) <= 3 for a, b in zip(drawn, box, strict=True)), (drawn, box)
    shots(page, "02-box-drawn")

    page.locator("#lamina-decompose").click()
    _status(page, "Done in", timeout=WORK_TIMEOUT_MS)
    page.locator("#lamina-layer-pick").get_by_text("1: object_1").wait_for()
    page.locator("#lamina-composite img").first.wait_for()
    shots(page, "03-decomposed")

    page.locator("#lamina-toggle").click()  # the top layer is selected after a decomposition
    page.locator("#lamina-layer-pick").get_by_text("1: object_1 (hidden)").wait_for(timeout=60_000)
    shots(page, "04-layer-hidden")

    psd_path = _download(page, tmp_path, "Photoshop PSD")
    shots(page, "05-psd-ready")
    psd = PSDImage.open(psd_path)
    layers = list(psd)
    assert [layer.name for layer in layers] == ["background", "object_1"]
    assert layers[0].visible and not layers[1].visible
    assert (psd.width, psd.height) == (width, height)

    # Bad uploads: a message in the page, and the page keeps working.
    fake = tmp_path / "holiday.png"
    fake.write_text("this is a text file, not a picture")
    _upload(page, "#lamina-photo-file", fake)
    _toast(page, "holiday.png: not an image file")
    assert page.locator("#lamina-photo img").first.is_visible()  # the photo and its box are still shown
    shots(page, "06-bad-upload-text")
    _close_toasts(page)
    huge = tmp_path / "huge.png"
    _png_header(huge, 20_000, 20_000)
    _upload(page, "#lamina-photo-file", huge)
    _toast(page, "huge.png: refused")
    shots(page, "07-bad-upload-huge")
    _close_toasts(page)
    page.locator("#lamina-toggle").click()  # still working: show the layer again
    page.locator("#lamina-layer-pick").get_by_text("1: object_1", exact=True).wait_for(timeout=60_000)
    second, _ = _photo(tmp_path, seed=2)
    _upload(page, "#lamina-photo-file", second)
    _status(page, "Photo 256x256")
    page.close()


def test_two_tabs_do_not_share_images(studio_url, browser, tmp_path):
    first, _ = _photo(tmp_path, seed=1)
    pages = [browser.new_page(), browser.new_page()]
    for page in pages:
        page.goto(studio_url)
        page.get_by_text("lamina studio").first.wait_for(timeout=60_000)
    _upload(pages[0], "#lamina-photo-file", first)
    _status(pages[0], "Photo 256x256")
    pages[1].locator("#lamina-decompose").click()  # the second tab has no photo of its own
    _toast(pages[1], "upload a photo first")
    for page in pages:
        page.close()


def test_background_to_layers_in_the_browser(studio_url, browser, shots, tmp_path):
    from psd_tools import PSDImage

    from lamina.studio.backend import bfs_available

    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page.goto(studio_url)
    page.get_by_text("lamina studio").first.wait_for(timeout=60_000)
    page.get_by_role("tab", name="Background → layers (BFS)").click()
    if not bfs_available():
        page.locator("#lamina-bfs-missing").get_by_text("BFS is not installed").wait_for()
        shots(page, "10-bfs-not-installed")
        page.close()
        pytest.skip("lamina.bfs is not in this lamina: the BFS tab says so (checked)")
    page.get_by_text("Use an example background").click()
    _status(page, "Example background")
    for i, (box, caption) in enumerate([((40, 120, 110, 190), "a red star with a shadow"),
                                        ((140, 100, 220, 180), "a blue ball with a shadow")]):
        _click_image_pixel(page, "#lamina-bfs-canvas", box[0], box[1])
        _status(page, "opposite corner")
        _click_image_pixel(page, "#lamina-bfs-canvas", box[2], box[3])
        _status(page, "type a caption")
        page.locator("#lamina-caption textarea, #lamina-caption input").first.fill(caption)
        page.locator("#lamina-bfs-add").click()
        _status(page, f"({i + 1} object layer(s))", timeout=WORK_TIMEOUT_MS)
        shots(page, f"1{i + 1}-bfs-object-{i + 1}")
    psd = PSDImage.open(_download(page, tmp_path, "Photoshop PSD"))
    assert [layer.name for layer in psd] == ["background", "a red star with a shadow", "a blue ball with a shadow"]
    page.close()


def _png_header(path: Path, width: int, height: int) -> None:
    import zlib

    from lamina.testing.fuzz import png_bytes

    path.write_bytes(png_bytes(width, height, colour_type=0, idat=zlib.compress(b"\0" * 64)))
