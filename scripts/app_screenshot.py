"""Screenshot of ``difftalk app`` after a generation, for the README (``docs/app.png``).

Renders the demo's never-seen synthetic speaker and new speech in its voice
(:func:`difftalk.demo.render_synthetic_inputs`), starts the app on 127.0.0.1 with the shipped demo
model, uploads both files through the page in headless chromium (selenium + Debian's chromium and
chromium-driver), generates, seeks the result to a frame mid-sentence and saves the whole page::

    .venv/bin/python scripts/app_screenshot.py            # → docs/app.png (a few minutes on a CPU)

On a CPU that another job keeps busy, run it with ``OMP_NUM_THREADS=1``: torch's default of one
OpenMP thread per core then makes the generation several times slower.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("app_screenshot")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _fit_window_to_page(driver: Any, width: int) -> None:
    """Grow the browser window until the whole page fits its viewport (no scrolling), scrolled to the top."""
    for _ in range(4):
        inner, outer, needed = driver.execute_script(
            "return [window.innerHeight, window.outerHeight, "
            "Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)];"
        )
        if inner >= needed:
            break
        driver.set_window_size(width, int(outer) + int(needed) - int(inner))
        time.sleep(0.5)
    driver.execute_script("window.scrollTo(0, 0);")
    time.sleep(0.5)


def take_screenshot(
    out: Path,
    checkpoint: str = "",
    steps: int = 25,
    width: int = 1400,
    seek: float = 1.6,
    timeout: float = 1200.0,
    progress_shot: Path | None = None,
    seconds: float = 3.0,
) -> Path:
    """Generate through the page and save a full-page PNG of ``width`` px to ``out``.

    Args:
        checkpoint: pre-filled checkpoint (empty: the shipped demo model).
        steps: DDIM steps typed into the page.
        seek: seconds into the result video shown in the screenshot.
        timeout: seconds to wait for the generation.
        progress_shot: also save the page while it generates (the progress bar), 20 s after the click.
        seconds: length of the synthetic speaker's clip and speech.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from difftalk.app import launch_app
    from difftalk.app_logic import AppConfig
    from difftalk.demo import render_synthetic_inputs

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        pair = render_synthetic_inputs(tmp / "synthetic", seconds=seconds)
        reference = Path(shutil.copy(pair.source, tmp / "speaker.mp4"))  # the names the page shows
        speech = Path(shutil.copy(pair.speech, tmp / "new_speech.wav"))
        app, url = launch_app(AppConfig(checkpoint=checkpoint, output_dir=tmp / "out"), port=_free_port(), block=False)
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},1200"):
            options.add_argument(argument)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            driver.get(url)
            wait = WebDriverWait(driver, 60)
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#speech input[type=file]"))
            driver.find_element(By.CSS_SELECTOR, "#source input[type=file]").send_keys(str(reference))
            driver.find_element(By.CSS_SELECTOR, "#speech input[type=file]").send_keys(str(speech))
            wait.until(lambda d: "video speaker.mp4" in d.find_element(By.ID, "source-info").text)
            wait.until(lambda d: "speech new_speech.wav" in d.find_element(By.ID, "speech-info").text)
            box = driver.find_element(By.CSS_SELECTOR, "#steps input[type=number]")
            box.clear()
            box.send_keys(str(steps), Keys.TAB)
            started = time.perf_counter()
            driver.find_element(By.ID, "generate").click()
            if progress_shot is not None:
                time.sleep(20.0)
                driver.save_screenshot(str(progress_shot))
            WebDriverWait(driver, timeout).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#result-video video[src]"))
            logger.info("generated in %.0f s", time.perf_counter() - started)
            video = driver.find_element(By.CSS_SELECTOR, "#result-video video")
            wait.until(lambda d: d.execute_script("return arguments[0].readyState", video) >= 2)
            driver.execute_script("arguments[0].currentTime = arguments[1];", video, seek)
            wait.until(lambda d: not d.execute_script("return arguments[0].seeking", video))
            time.sleep(1.0)  # the seeked frame is painted
            _fit_window_to_page(driver, width)
            out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(out))
        finally:
            driver.quit()
            app.close()
    logger.info("wrote %s", out)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line of the script (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/app.png"), help="PNG to write (default: docs/app.png)")
    parser.add_argument("--checkpoint", default="", help="checkpoint folder or hub id (default: the shipped model)")
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps (default: 25)")
    parser.add_argument("--width", type=int, default=1400, help="browser width in px (default: 1400)")
    parser.add_argument("--progress-shot", type=Path, help="also save the page 20 s into the generation here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    take_screenshot(args.out, args.checkpoint, args.steps, args.width, progress_shot=args.progress_shot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
