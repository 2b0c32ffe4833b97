"""``difftalk app``: the upload limits, the generate and verify callbacks, and the page in a real headless browser."""

from __future__ import annotations

import shutil
import socket
import sys
import urllib.request
from dataclasses import replace
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import soundfile as sf
from skimage import data

from difftalk.app_limits import UploadError, UploadLimits, check_source, check_speech, check_upload
from difftalk.app_logic import (
    AUTO,
    SAMPLERS,
    AppConfig,
    GenerationRequest,
    PipelineCache,
    generate_options,
    resolve_inputs,
    run_generation,
    verify_upload,
)
from difftalk.diffusion import SAMPLERS as DIFFUSION_SAMPLERS
from difftalk.io.audio import save_wav
from difftalk.io.video import VideoWriter, probe_video
from difftalk.io.watermark import verify_file
from tests.helpers import needs_dlib

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One torch thread for this module: the tiny model gains nothing from more, and on a 2-core machine that
    another job keeps busy (a training run beside the tests) two OpenMP threads made a 25-frame run ~30x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A tiny random-weight DiffTalk checkpoint (recommends 25 DDIM steps)."""
    import torch

    from difftalk.config import load_config
    from difftalk.models.difftalk import DiffTalkModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("app_ckpt") / "model"
    DiffTalkModel(load_config("tiny").model).save_pretrained(path, feature_backend="mel", sampler_steps=25)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A 200×200 photo of a face, 1 s of speech-like tone bursts, a silent WAV and a 0.4 s 64×48 video."""
    root = tmp_path_factory.mktemp("app_media")
    face = cv2.resize(data.astronaut()[0:400, 50:450], (200, 200), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(root / "face.png"), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    t = np.arange(16000) / 16000
    save_wav(root / "speech.wav", (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)))
    save_wav(root / "silent.wav", np.zeros(16000, np.float32))
    with VideoWriter(root / "clip.mp4", fps=25, audio=np.zeros(6400, np.float32)) as writer:
        for i in range(10):
            writer.write(np.full((48, 64, 3), 20 * i, np.uint8))
    return root


# --- upload limits (pure functions, no gradio) -------------------------------------------------------


def test_uploads_within_the_limits_are_described(media):
    limits = UploadLimits()
    assert check_source(media / "face.png", limits).describe() == "photo face.png: 200×200 px, 0.1 MB"
    video = check_source(media / "clip.mp4", limits)
    assert (video.kind, video.size) == ("video", (64, 48)) and video.seconds == pytest.approx(0.4, abs=0.05)
    assert check_speech(media / "speech.wav", limits).seconds == pytest.approx(1.0)
    assert check_upload(media / "clip.mp4", limits, "verify").kind == "video"
    assert "200 MB per file, 120 s" in limits.describe() and "4096 px" in limits.describe()
    with pytest.raises(ValueError, match="positive"):
        UploadLimits(max_seconds=0)


def _refused(check, path, limits, *fragments):
    with pytest.raises(UploadError) as info:
        check(path, limits)
    message = str(info.value)
    assert all(f in message for f in fragments), message
    assert str(path.parent) not in message and "\n" not in message  # the upload folder is not shown
    return message


def test_each_limit_names_the_limit_the_value_and_the_fix(media, tmp_path):
    wide = tmp_path / "wide.png"
    cv2.imwrite(str(wide), np.zeros((8, 5000, 3), np.uint8))
    _refused(check_source, wide, UploadLimits(), "5000×8 px", "4096 px", "Downscale", "--max-side")
    _refused(check_source, media / "clip.mp4", UploadLimits(max_side=32), "64×48 px", "32 px", "--max-side")
    _refused(check_source, media / "clip.mp4", UploadLimits(max_seconds=0.2), "0.4 s", "0.2 s", "Trim")
    tiny = UploadLimits(max_megabytes=0.01)
    _refused(check_source, media / "face.png", tiny, "0.1 MB", "0.01 MB", "--max-file-mb")
    long_speech = tmp_path / "long.wav"
    sf.write(long_speech, np.zeros(121 * 8000, np.float32), 8000)
    _refused(check_speech, long_speech, UploadLimits(), "121.0 s long", "limit is 120 s", "--max-seconds")


def test_empty_corrupt_silent_and_wrong_uploads_are_clear_messages(media, tmp_path):
    limits = UploadLimits()
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    _refused(check_source, empty, limits, "'empty.mp4' is empty (0 bytes)")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    _refused(check_source, broken, limits, "'broken.mp4' cannot be read as a video or photo")
    fake_photo = tmp_path / "photo.jpg"
    fake_photo.write_text("not an image")
    _refused(check_source, fake_photo, limits, "'photo.jpg' cannot be read", "PNG or JPEG")
    _refused(check_speech, media / "silent.wav", limits, "is silent", "dBFS", "speech in it")
    _refused(check_speech, broken, limits, "'broken.mp4' cannot be used")
    no_audio = tmp_path / "mute.mp4"
    with VideoWriter(no_audio, fps=25) as writer:
        writer.write(np.zeros((16, 16, 3), np.uint8))
    _refused(check_speech, no_audio, limits, "has no audio track")
    with pytest.raises(UploadError, match="no source"):
        resolve_inputs(GenerationRequest(speech=str(media / "speech.wav")), AppConfig())
    with pytest.raises(UploadError, match="no file"):
        verify_upload(None, limits)
    _refused(lambda p, lim: verify_upload(str(p), lim), broken, limits, "cannot be read as a video")


# --- the callbacks -----------------------------------------------------------------------------------


@needs_dlib
def test_generate_writes_a_watermarked_mp4_and_reuses_model_and_source_analysis(tiny_checkpoint, media, tmp_path):
    config = AppConfig(checkpoint=str(tiny_checkpoint), output_dir=tmp_path / "out")
    cache = PipelineCache()
    stages = []
    request = GenerationRequest(
        source=str(media / "face.png"), speech=str(media / "speech.wav"), sampler="DDIM", steps=2
    )
    result = run_generation(request, config, cache, lambda fraction, desc: stages.append(desc))
    assert result.video.parent == tmp_path / "out" and result.video.suffix == ".mp4"
    info = probe_video(result.video)
    assert info.num_frames == 25 and info.has_audio and (info.width, info.height) == (200, 200)
    with av.open(str(result.video)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 25
    assert verify_file(result.video).watermark.found
    assert "watermark FOUND" in result.summary and "DDIM 2 steps" in result.summary
    assert "photo face.png" in result.summary and any("fewer than the 25" in w for w in result.warnings)
    assert stages[0] == "checking the inputs" and "generating" in stages
    assert "watermark FOUND" in verify_upload(str(result.video), config.limits)
    # the same source again (as the next click would): the loaded model and its analysis are reused
    from difftalk.cli_options import resolve_dtype

    options = generate_options(replace(request, seed=1))
    dtype = resolve_dtype("auto", "cpu")  # what the app runs on this machine
    pipe = cache.prepare(str(tiny_checkpoint), "cpu", dtype, media / "face.png", options)
    assert pipe.source is not None and (cache.loads, cache.analyses) == (1, 1)
    with pytest.raises(ValueError, match="unknown sampler"):
        run_generation(replace(request, sampler="PLMS"), config, cache)
    chosen = [label for label in SAMPLERS if label != AUTO]
    assert [generate_options(replace(request, sampler=label)).sampler for label in chosen] == list(DIFFUSION_SAMPLERS)
    # Auto (the page's default): the checkpoint's own sampler and steps, whatever the steps slider says
    auto = generate_options(replace(request, sampler=AUTO))
    assert auto.sampler is None and auto.num_steps is None and GenerationRequest().sampler == AUTO
    result = run_generation(replace(request, sampler=AUTO), config, cache)
    assert "Auto = DDIM 25 steps" in result.summary and not result.warnings


def test_the_synthetic_identity_is_rendered_once_with_its_landmarks(tmp_path):
    from difftalk.demo import DEMO_SEED

    assert GenerationRequest().synthetic_seed == DEMO_SEED
    config = AppConfig(output_dir=tmp_path)
    source, speech, checked = resolve_inputs(GenerationRequest(synthetic=True, synthetic_seed=5), config)
    assert source.is_file() and speech.is_file() and checked == []
    assert (source.parent.parent / "ground_truth" / source.stem / "landmarks.npy").is_file()
    assert probe_video(source).duration == pytest.approx(4.0, abs=0.05)
    assert resolve_inputs(GenerationRequest(synthetic=True, synthetic_seed=5), config)[0] == source


def test_user_errors_become_gradio_errors_and_a_missing_gradio_names_the_extra(monkeypatch, caplog):
    import gradio as gr

    from difftalk.app import gradio_error
    from difftalk.cli import main

    error = gradio_error(UploadError("the photo 'a<b>.png' is 5000×8 px"))
    assert isinstance(error, gr.Error) and "a&lt;b&gt;.png" in error.message
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError, as without the extra
    assert main(["app", "--port", "7999"]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "pip install 'difftalk[app]'" in errors[0]


# --- the page in a real browser ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.skipif(
    not (CHROMIUM.is_file() and CHROMEDRIVER.is_file() and shutil.which("chromedriver")),
    reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver); "
    "`bash .ci/run` installs them: apt-get install chromium chromium-driver",
)
@pytest.mark.slow
def test_the_page_uploads_generates_and_plays_the_video_in_headless_chromium(tiny_checkpoint, media, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from difftalk.app import launch_app

    config = AppConfig(checkpoint=str(tiny_checkpoint), output_dir=tmp_path / "out", sampler="DDIM")
    app, url = launch_app(config, host="127.0.0.1", port=_free_port(), block=False)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1600"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#speech input[type=file]"))
        driver.find_element(By.CSS_SELECTOR, "#source input[type=file]").send_keys(str(media / "face.png"))
        # a refused upload: described at once, and generating shows the message (not a traceback)
        driver.find_element(By.CSS_SELECTOR, "#speech input[type=file]").send_keys(str(media / "silent.wav"))
        wait.until(lambda d: "'silent.wav' is silent" in d.find_element(By.ID, "speech-info").text)
        driver.find_element(By.ID, "generate").click()
        toasts = "[data-testid=toast-body]"
        wait.until(lambda d: any("is silent" in e.text for e in d.find_elements(By.CSS_SELECTOR, toasts)))
        driver.find_element(By.CSS_SELECTOR, "#speech button[aria-label=Clear]").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#speech input[type=file]"))
        driver.find_element(By.CSS_SELECTOR, "#speech input[type=file]").send_keys(str(media / "speech.wav"))
        wait.until(lambda d: "photo face.png: 200×200 px" in d.find_element(By.ID, "source-info").text)
        wait.until(lambda d: "speech speech.wav: 1.0 s" in d.find_element(By.ID, "speech-info").text)
        steps = driver.find_element(By.CSS_SELECTOR, "#steps input[type=number]")
        steps.clear()
        steps.send_keys("2", Keys.TAB)
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#steps input[type=range]").get_attribute("value") == "2")
        driver.find_element(By.ID, "generate").click()
        WebDriverWait(driver, 180).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#result-video video[src]"))
        video = driver.find_element(By.CSS_SELECTOR, "#result-video video")
        wait.until(lambda d: d.execute_script("return arguments[0].readyState", video) >= 1)
        duration, width, error = driver.execute_script(
            "const v = arguments[0]; return [v.duration, v.videoWidth, v.error && v.error.code];", video
        )
        assert error is None and duration == pytest.approx(1.0, abs=0.1) and width == 200
        assert "watermark FOUND" in driver.find_element(By.ID, "summary").text
        assert "DDIM 2 steps" in driver.find_element(By.ID, "summary").text
        downloaded = tmp_path / "downloaded.mp4"
        with urllib.request.urlopen(video.get_attribute("src"), timeout=30) as response:
            downloaded.write_bytes(response.read())
        assert probe_video(downloaded).has_audio and verify_file(downloaded).watermark.found
        # the second tab checks an uploaded video for the watermark
        driver.find_element(By.XPATH, "//button[@role='tab'][contains(., 'Verify watermark')]").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#verify-file input[type=file]"))
        driver.find_element(By.CSS_SELECTOR, "#verify-file input[type=file]").send_keys(str(downloaded))
        wait.until(lambda d: "downloaded" in d.find_element(By.ID, "verify-file").text)  # the name is uploaded
        driver.find_element(By.ID, "verify").click()
        verdict = driver.find_element(By.CSS_SELECTOR, "#verdict textarea")
        wait.until(lambda d: "watermark FOUND" in (verdict.get_attribute("value") or ""))
    finally:
        driver.quit()
        app.close()
