"""Helpers of the app tests and of ``scripts/app_screenshot.py``: a tiny model, the app served
on a free loopback port, and a headless Chromium (Debian's ``chromium`` + ``chromium-driver``,
never a downloaded browser) that grounds a narrative on the page.
"""

from __future__ import annotations

import base64
import io
import socket
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
HOST = "127.0.0.1"


def tiny_checkpoint(folder: Path, seed: int = 0) -> Path:
    """A random-weights 64-px model (no pretrained backbone) saved under ``folder``."""
    import torch

    from epng.model import build_epng

    torch.manual_seed(seed)
    build_epng("epng_lite0_minilm", image_size=64, backbone_weights="none").eval().save_pretrained(folder)
    return folder


def synthetic_scene(path: Path, index: int = 3, size: int = 160) -> tuple[Path, str]:
    """`epng synth`'s scene ``index`` (seed 0, val2017) at ``size`` px: its image written as a PNG
    file, and its first narrative with the grounded phrases in [brackets]."""
    from epng.app.examples import bracketed_narrative
    from epng.data.synth import synth_image

    _, scene, records = synth_image(0, "val2017", index, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(scene.image).save(path)
    return path, bracketed_narrative(records[0])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@contextmanager
def served_app(predictor, examples_dir: Path) -> Iterator[str]:
    """The app of ``predictor`` served on a free loopback port: yields its URL, stops it after."""
    from epng.app.server import launch

    app = launch(predictor, HOST, free_port(), block=False, quiet=True, examples_dir=examples_dir)
    try:
        yield f"http://{HOST}:{app.server_port}/"
    finally:
        app.close(verbose=False)


def browser_missing() -> str | None:
    """Why the browser cannot run here (None when it can)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        return f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed"
    return None


@contextmanager
def headless_chromium(width: int = 1280, height: int = 1000):
    """A headless Chromium under Selenium, driver path given explicitly (no Selenium Manager)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-proxy-server"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={width},{height}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class PageResult:
    """What the page shows after Ground."""

    overlay: np.ndarray  # (h, w, 3) uint8, decoded from the output image's source
    phrases: list[tuple[str, str, tuple[int, int, int]]]  # highlighted (text, label, label colour RGB)
    latency: str
    message: str


def _decode_src(src: str) -> np.ndarray:
    if src.startswith("data:"):
        data = base64.b64decode(src.split(",", 1)[1])
    else:
        if not src.startswith(f"http://{HOST}:"):
            raise AssertionError(f"the output image is not served from the loopback app: {src[:80]}")
        with urllib.request.urlopen(src, timeout=10) as response:
            data = response.read()
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _rgb(css: str) -> tuple[int, int, int]:
    """``rgb(1, 2, 3)`` / ``rgba(1, 2, 3, 0.5)`` -> (1, 2, 3)."""
    inner = css[css.index("(") + 1 : css.index(")")]
    return tuple(int(float(v)) for v in inner.split(",")[:3])


def ground_in_browser(driver, url: str, image: Path, narrative: str, timeout: float = 60) -> PageResult:
    """Open the page, upload ``image``, type ``narrative``, press Ground and read the result."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def find(css: str):
        return driver.find_element(By.CSS_SELECTOR, css)

    driver.get(url)
    wait = WebDriverWait(driver, timeout)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#epng-image input[type=file]"))
    find("#epng-image input[type=file]").send_keys(str(Path(image).resolve()))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#epng-image img"))  # the upload's preview
    find("#epng-narrative textarea").send_keys(narrative)
    find("#epng-ground").click()
    wait.until(lambda d: "ms" in find("#epng-latency").text or find("#epng-message").text.strip())
    message = find("#epng-message").text.strip()
    if message:
        return PageResult(np.zeros((0, 0, 3), np.uint8), [], "", message)
    overlay = _decode_src(find("#epng-overlay img").get_attribute("src"))
    phrases = []
    for token in driver.find_elements(By.CSS_SELECTOR, "#epng-phrases .token.highlighted"):
        label = token.find_element(By.CSS_SELECTOR, ".label")
        text = token.find_element(By.CSS_SELECTOR, ".text").text
        phrases.append((text, label.text, _rgb(label.value_of_css_property("background-color"))))
    return PageResult(overlay, phrases, find("#epng-latency").text, message)


def _redrawn(driver, action, timeout: float) -> np.ndarray:
    """Run ``action`` on the page; return the output image once its source has changed."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def src(d) -> str:
        return d.find_element(By.CSS_SELECTOR, "#epng-overlay img").get_attribute("src")

    before = src(driver)
    action()
    WebDriverWait(driver, timeout).until(lambda d: src(d) != before)
    return _decode_src(src(driver))


def show_phrase_in_browser(driver, k: int, timeout: float = 30) -> np.ndarray:
    """Click the ``k``-th highlighted phrase; return the output image once it has been redrawn."""
    from selenium.webdriver.common.by import By

    tokens = driver.find_elements(By.CSS_SELECTOR, "#epng-phrases .token.highlighted")
    return _redrawn(driver, tokens[k].click, timeout)


def set_threshold_in_browser(driver, value: float, timeout: float = 30) -> np.ndarray:
    """Type ``value`` into the threshold box; return the output image once it has been redrawn."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, "#epng-threshold input[type=number]")
    return _redrawn(driver, lambda: box.send_keys(Keys.CONTROL, "a", Keys.NULL, str(value), Keys.ENTER), timeout)


def save_full_page(driver, path: Path, width: int = 1280) -> Path:
    """A screenshot of the whole page (the window grown to the page's height)."""
    height = driver.execute_script(
        "document.documentElement.style.overflow = 'hidden'; return document.documentElement.scrollHeight"
    )
    driver.set_window_size(width, height + 150)  # the window's own bars take part of its height
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    return path
