"""Watermark and provenance: invisibility, survival of H.264 re-encoding and resizing, false alarms."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data
from skimage.color import deltaE_ciede2000, rgb2lab

from difftalk.io.video import VideoError, VideoWriter, iter_frames
from difftalk.io.watermark import (
    DETECTION_THRESHOLD,
    WatermarkDetector,
    detect_watermark,
    embed_watermark,
    payload_from_text,
    provenance_tags,
    read_provenance,
    verify_file,
)

PAYLOAD = 0x5EED1234
SIZE = 256
FRAMES = 32
CLIPS = ("astronaut", "coffee", "gradient")


def _square(image: np.ndarray, size: int = SIZE) -> np.ndarray:
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return cv2.resize(image[top : top + side, left : left + side], (size, size), interpolation=cv2.INTER_AREA)


def _talking(image: np.ndarray, frames: int = FRAMES) -> list[np.ndarray]:
    """A still portrait whose lower-middle band ("mouth") opens and closes, like a talking head."""
    base = _square(image)
    top, left, height, width = int(SIZE * 0.62), int(SIZE * 0.35), int(SIZE * 0.12), SIZE // 3
    clip = []
    for t in range(frames):
        frame = base.copy()
        opening = round(height / 2 * (1 + np.sin(t * 0.8)))
        source = base[top : top + height + opening, left : left + width]
        frame[top : top + 2 * height, left : left + width] = cv2.resize(source, (width, 2 * height))
        clip.append(frame)
    return clip


def _gradient(frames: int = FRAMES) -> list[np.ndarray]:
    """A smooth colour ramp that slowly brightens (flat content: the hardest place to hide a mark)."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    base = np.dstack([60 + 120 * x, 80 + 60 * y, 140 - 40 * x])
    return [np.clip(base + t * 0.25, 0, 255).astype(np.uint8) for t in range(frames)]


def _write(path: Path, frames: list[np.ndarray], crf: int, metadata: dict[str, str] | None = None) -> Path:
    with VideoWriter(path, fps=25, crf=crf, metadata=metadata) as writer:
        for frame in frames:
            writer.write(frame)
    return path


def _reencode(source: Path, target: Path, crf: int, scale: float = 1.0) -> Path:
    """Decode and encode again (no tags), optionally resizing every frame with ``cv2.resize``."""
    frames = []
    for frame in iter_frames(source):
        if scale != 1.0:
            height, width = frame.shape[:2]
            frame = cv2.resize(frame, (round(width * scale), round(height * scale)))
        frames.append(frame)
    return _write(target, frames, crf)


def _psnr(reference: np.ndarray, test: np.ndarray) -> float:
    mse = float(np.mean((reference.astype(np.float64) - test) ** 2))
    return 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def clips() -> dict[str, list[np.ndarray]]:
    return {"astronaut": _talking(data.astronaut()), "coffee": _talking(data.coffee()), "gradient": _gradient()}


@pytest.fixture(scope="module")
def marked(clips: dict[str, list[np.ndarray]]) -> dict[str, list[np.ndarray]]:
    return {name: [embed_watermark(frame, PAYLOAD) for frame in frames] for name, frames in clips.items()}


@pytest.fixture(scope="module")
def videos(
    tmp_path_factory: pytest.TempPathFactory,
    clips: dict[str, list[np.ndarray]],
    marked: dict[str, list[np.ndarray]],
) -> dict[str, Path]:
    """``<clip>`` (marked, crf 18, tagged) and ``<clip>-clean`` (unmarked, crf 18) MP4 files."""
    folder = tmp_path_factory.mktemp("watermark")
    tags = provenance_tags("tiny-test-model", {"seed": 7}, payload=PAYLOAD)
    paths = {}
    for name in CLIPS:
        paths[name] = _write(folder / f"{name}.mp4", marked[name], crf=18, metadata=tags)
        paths[f"{name}-clean"] = _write(folder / f"{name}-clean.mp4", clips[name], crf=18)
    return paths


@pytest.mark.parametrize("name", CLIPS)
def test_embedding_is_invisible(clips, marked, name):
    psnrs = [_psnr(a, b) for a, b in zip(clips[name], marked[name], strict=True)]
    assert min(psnrs) >= 38.0
    if name == "gradient":  # flat content gets a much weaker mark: colour error about one JND or less
        assert min(psnrs) >= 45.0
        error = deltaE_ciede2000(rgb2lab(clips[name][0]), rgb2lab(marked[name][0]))
        assert error.mean() < 1.2 and np.percentile(error, 99) < 4.0
    assert all(frame.shape == (SIZE, SIZE, 3) and frame.dtype == np.uint8 for frame in marked[name])


def test_embedding_avoids_flat_areas_and_is_deterministic():
    frame = _square(data.astronaut())
    frame[:, SIZE // 2 :] = 128  # right half flat grey
    out = embed_watermark(frame, PAYLOAD)
    change = np.abs(out.astype(np.float64) - frame)
    busy, flat = change[:, : SIZE // 2 - 16].mean(), change[:, SIZE // 2 + 16 :].mean()
    assert flat < 0.5 * busy
    assert np.array_equal(out, embed_watermark(frame, PAYLOAD))
    assert not np.array_equal(out, embed_watermark(frame, PAYLOAD + 1))


@pytest.mark.parametrize("shape", [(97, 131), (64, 300), (257, 200)])
def test_odd_and_small_sizes_round_trip_in_memory(shape):
    frame = cv2.resize(data.chelsea(), (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    out = embed_watermark(frame, PAYLOAD.to_bytes(4, "big"))
    assert out.shape == frame.shape
    assert _psnr(frame, out) >= 38.0
    result = detect_watermark([out])
    assert result.found and result.payload == PAYLOAD


def test_bad_inputs_are_refused():
    frame = _square(data.coffee())
    with pytest.raises(ValueError, match="too small"):
        embed_watermark(frame[:40], PAYLOAD)
    with pytest.raises(ValueError, match="uint8"):
        embed_watermark(frame.astype(np.float32), PAYLOAD)
    with pytest.raises(ValueError, match="32 unsigned bits"):
        embed_watermark(frame, 2**32)
    with pytest.raises(ValueError, match="bytes"):
        embed_watermark(frame, b"12345")
    assert 0 <= payload_from_text("model-a") < 2**32 and payload_from_text("model-a") != payload_from_text("b")


@pytest.mark.parametrize("name", CLIPS)
def test_verify_original_file(videos, name):
    result = verify_file(videos[name])
    assert result.watermark.found and result.watermark.payload == PAYLOAD
    assert result.watermark.frames_used == 8  # conclusive after the first check: stopped early
    assert result.provenance is not None and result.provenance["ai_generated"] is True
    assert result.provenance["watermark"] == {"scheme": "difftalk-wm1", "payload": f"{PAYLOAD:08x}"}
    assert "FOUND" in result.summary and "tiny-test-model" in result.summary


@pytest.mark.parametrize(
    ("name", "crf", "scale"),
    [(name, 28, 1.0) for name in CLIPS] + [(name, 18, 0.5) for name in CLIPS] + [(name, 28, 1.5) for name in CLIPS],
)
def test_watermark_survives_reencoding_and_resizing(videos, tmp_path, name, crf, scale):
    attacked = _reencode(videos[name], tmp_path / "attacked.mp4", crf=crf, scale=scale)
    result = verify_file(attacked)
    assert result.provenance is None  # tags are gone, the watermark is not
    assert result.watermark.found, result.summary
    assert result.watermark.payload == PAYLOAD
    assert result.watermark.score >= DETECTION_THRESHOLD


@pytest.mark.parametrize("name", CLIPS)
def test_unmarked_video_is_not_flagged(videos, tmp_path, name):
    for path in (videos[f"{name}-clean"], _reencode(videos[f"{name}-clean"], tmp_path / "c.mp4", 28)):
        result = verify_file(path)
        assert not result.watermark.found and result.watermark.payload is None
        assert result.watermark.score < DETECTION_THRESHOLD - 6
        assert "no difftalk watermark" in result.summary
    assert not verify_file(videos[name], key="some-other-key").watermark.found


def test_false_alarm_scores_on_natural_images_stay_far_below_threshold():
    """Score distribution on unmarked content (the threshold's calibration): 160 image/key pairs."""
    images = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.immunohistochemistry()]
    images += [np.dstack([gray] * 3) for gray in (data.camera(), data.moon(), data.brick(), data.grass())]
    images.append(data.hubble_deep_field())
    scores = []
    for key in range(8):
        for image in images:
            for size in ((256, 256), (320, 180)):
                frame = cv2.resize(np.ascontiguousarray(image[..., :3]), size, interpolation=cv2.INTER_AREA)
                result = detect_watermark([frame, np.ascontiguousarray(frame[:, ::-1])], key=f"key-{key}")
                assert not result.found
                scores.append(result.score)
    # For a random word P(score >= s) <= 2**-s; the largest of 160 should sit near log2(160) ≈ 7.
    assert max(scores) < DETECTION_THRESHOLD - 4
    assert np.mean(np.array(scores) >= 4) < 0.15


def test_detector_accumulates_and_reports_nothing_for_blank_frames(marked):
    detector = WatermarkDetector()
    assert detector.result().frames_used == 0 and not detector.result().found
    for frame in marked["coffee"][:3]:
        detector.update(frame)
    assert detector.result().found and detector.result().frames_used == 3
    blank = detect_watermark([np.full((128, 128, 3), 90, np.uint8)] * 4)
    assert not blank.found and blank.score == 0.0


def test_provenance_tags_round_trip(tmp_path, clips):
    tags = provenance_tags("hdtf-256", {"seed": 3, "audio": "speech.wav"}, payload=PAYLOAD)
    assert set(tags) == {"comment", "description"} and "AI-generated" in tags["description"]
    path = _write(tmp_path / "tagged.mp4", clips["coffee"][:4], crf=23, metadata=tags)
    record = read_provenance(path)
    assert record is not None
    assert record["generator"] == "difftalk" and record["model"] == "hdtf-256" and record["ai_generated"] is True
    assert record["seed"] == 3 and record["audio"] == "speech.wav" and record["created"].endswith("Z")
    assert record["watermark"]["payload"] == f"{PAYLOAD:08x}"
    assert read_provenance(_write(tmp_path / "plain.mp4", clips["coffee"][:2], crf=23)) is None
    foreign = _write(tmp_path / "foreign.mp4", clips["coffee"][:2], crf=23, metadata={"comment": "hello"})
    assert read_provenance(foreign) is None
    with pytest.raises(ValueError, match="reserved"):
        provenance_tags("m", {"ai_generated": False})


def test_missing_and_corrupt_files_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        verify_file(tmp_path / "missing.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        verify_file(empty)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError):
        verify_file(garbage)
    with pytest.raises(ValueError, match="max_frames"):
        verify_file(garbage, max_frames=0)
