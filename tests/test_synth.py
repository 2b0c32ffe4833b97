"""The synthetic talking-face benchmark: layout, audio↔mouth coupling, landmarks, determinism, sizes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from difftalk.io.audio import SAMPLE_RATE, load_audio
from difftalk.io.video import probe_video, read_frames
from difftalk.preprocess.crop import crop_box
from difftalk.synth.articulation import CHANNELS, FPS, JAW_OPEN, LIP_CLOSURE, VOICING, sample_articulation
from difftalk.synth.generate import identity_for, make_contact_sheet, run_synth, split_identities
from difftalk.synth.geometry import FaceState
from difftalk.synth.identity import Identity
from difftalk.synth.render import FaceRenderer
from difftalk.synth.speech import synthesize_speech

IDENTITIES, SECONDS, SIZE = 3, 3.0, 128
NUM_FRAMES = round(SECONDS * FPS)
SAMPLES_PER_FRAME = SAMPLE_RATE // round(FPS)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    run_synth(out, identities=IDENTITIES, seconds=SECONDS, size=SIZE, seed=7, test_fraction=0.34, progress=False)
    return out


def _clips(bench: Path) -> list[str]:
    manifest = json.loads((bench / "synth.json").read_text())
    return [clip for entry in manifest["identities"] for clip in entry["clips"]]


def _frame_rms(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """RMS of a 40 ms window centred on each frame time i / fps."""
    padded = np.pad(audio, (SAMPLES_PER_FRAME // 2, SAMPLES_PER_FRAME))
    windows = np.stack([padded[i * SAMPLES_PER_FRAME : (i + 1) * SAMPLES_PER_FRAME] for i in range(num_frames)])
    return np.sqrt(np.mean(windows.astype(np.float64) ** 2, axis=1))


def test_layout_files_and_identity_split(bench: Path) -> None:
    manifest = json.loads((bench / "synth.json").read_text())
    assert manifest["format"] == "difftalk-synth"
    assert manifest["seed"] == 7 and manifest["settings"]["size"] == SIZE
    assert manifest["channels"] == list(CHANNELS)
    train, test = set(manifest["split"]["train"]), set(manifest["split"]["test"])
    assert train and test and not train & test
    assert train | test == {f"id{i:04d}" for i in range(IDENTITIES)}
    for entry in manifest["identities"]:
        assert entry["split"] == ("test" if entry["name"] in test else "train")
    for clip in _clips(bench):
        truth = bench / "ground_truth" / clip
        landmarks = np.load(truth / "landmarks.npy")
        articulation = np.load(truth / "articulation.npy")
        assert landmarks.shape == (NUM_FRAMES, 68, 2) and landmarks.dtype == np.float32
        assert articulation.shape == (NUM_FRAMES, 5) and articulation.dtype == np.float32
        assert articulation.min() >= 0.0 and articulation.max() <= 1.0
        assert articulation[:, JAW_OPEN].max() > 0.5  # the clip really speaks
        assert load_audio(truth / "audio.wav").size == NUM_FRAMES * SAMPLES_PER_FRAME
        record = json.loads((truth / "identity.json").read_text())
        assert Identity.from_dict(record["parameters"]) == identity_for(7, record["index"])
    # The split is by identity and stable for a given seed.
    assert split_identities(10, 0.2, 0) == split_identities(10, 0.2, 0)
    tr, te = split_identities(10, 0.2, 0)
    assert len(te) == 2 and not set(tr) & set(te) and sorted(tr + te) == list(range(10))


def test_decoded_audio_determines_jaw_opening(bench: Path) -> None:
    clips = _clips(bench)
    jaws = {c: np.load(bench / "ground_truth" / c / "articulation.npy")[:, JAW_OPEN] for c in clips}
    for clip in clips:
        audio = load_audio(bench / "videos" / f"{clip}.mp4")
        rms = _frame_rms(audio, NUM_FRAMES)
        assert np.corrcoef(rms, jaws[clip])[0, 1] >= 0.8, clip
        # Control: another clip's mouth does not match this audio.
        other = jaws[clips[(clips.index(clip) + 1) % len(clips)]]
        assert np.corrcoef(rms, other)[0, 1] < 0.5


def test_mp4_streams_and_durations(bench: Path) -> None:
    for clip in _clips(bench):
        path = bench / "videos" / f"{clip}.mp4"
        info = probe_video(path)
        assert info.has_audio and info.fps == pytest.approx(FPS)
        assert (info.width, info.height) == (SIZE, SIZE) and info.num_frames == NUM_FRAMES
        audio_seconds = load_audio(path).size / SAMPLE_RATE
        assert abs(info.duration - audio_seconds) <= 1.0 / FPS
        assert abs(info.duration - NUM_FRAMES / FPS) <= 1.0 / FPS
    frames = read_frames(bench / "videos" / f"{_clips(bench)[0]}.mp4")
    assert frames.shape == (NUM_FRAMES, SIZE, SIZE, 3)


def test_landmarks_inside_and_anatomically_consistent(bench: Path) -> None:
    for clip in _clips(bench):
        truth = bench / "ground_truth" / clip
        lm = np.load(truth / "landmarks.npy").astype(np.float64)
        art = np.load(truth / "articulation.npy")
        assert lm.min() >= 0 and lm.max() < SIZE
        # Order along the face's own vertical axis (head roll included): brow < eye < nose < lips < chin.
        axis = lm[:, 8] - lm[:, 27]
        axis /= np.linalg.norm(axis, axis=1, keepdims=True)
        height = np.einsum("nkd,nd->nk", lm, axis)
        assert np.all(height[:, 19] < height[:, 37]) and np.all(height[:, 37] < height[:, 30])
        assert np.all(height[:, 30] < height[:, 33]) and np.all(height[:, 33] < height[:, 51])
        assert np.all(height[:, 51] <= height[:, 62] + 1e-3) and np.all(height[:, 62] <= height[:, 66] + 1e-3)
        assert np.all(height[:, 66] < height[:, 57]) and np.all(height[:, 57] < height[:, 8])
        # Subject's right (image left) before left: jaw 0 < 16, eye 36 < 45, mouth corners 48 < 54.
        assert np.all(lm[:, 0, 0] < lm[:, 16, 0]) and np.all(lm[:, 36, 0] < lm[:, 45, 0])
        assert np.all(lm[:, 48, 0] < lm[:, 54, 0])
        face_width = np.linalg.norm(lm[:, 16] - lm[:, 0], axis=1)
        opening = np.linalg.norm(lm[:, 66] - lm[:, 62], axis=1) / face_width
        assert np.corrcoef(opening, art[:, JAW_OPEN])[0, 1] >= 0.9
        chin_drop = (height[:, 8] - height[:, 33]) / face_width
        assert np.corrcoef(chin_drop, art[:, JAW_OPEN])[0, 1] >= 0.9
        # Closures shut the lips; pauses close the mouth and stop voicing.
        shut = art[:, LIP_CLOSURE] > 0.97
        assert np.all(opening[shut] < 0.01)
        quiet = art[:, VOICING] < 0.01
        assert np.all(opening[quiet & (art[:, JAW_OPEN] < 0.01)] < 0.01)
        # The crop box from the mouth-free points stays (almost) inside the frame.
        box = crop_box(lm[0].astype(np.float32))
        assert box[0] > -0.05 * SIZE and box[1] > -0.05 * SIZE and box[2] < 1.05 * SIZE and box[3] < 1.05 * SIZE


def test_drawn_features_are_at_the_landmarks() -> None:
    renderer = FaceRenderer(identity_for(0, 1), 256)
    closed = renderer.render(FaceState(articulation=(0.0, 0.2, 0.0, 0.0, 0.0)))
    wide = renderer.render(FaceState(articulation=(1.0, 0.35, 0.0, 0.0, 1.0)))
    inner = np.zeros((256, 256), dtype=np.uint8)
    cv2.fillPoly(inner, [np.round(wide.landmarks[60:68]).astype(np.int32)], 1)
    inner = cv2.erode(inner, np.ones((3, 3), np.uint8)).astype(bool)
    assert inner.sum() > 100
    diff = np.abs(wide.image.astype(int) - closed.image.astype(int)).sum(axis=2)
    assert diff[inner].mean() > 60  # the mouth interior (cavity/teeth/tongue) replaced lips and skin
    far = np.ones((256, 256), dtype=bool)
    far[int(wide.landmarks[:, 1].min()) - 40 :, :] = False  # above the brows nothing changed
    assert diff[far].mean() < 1.0
    # A blink darkens nothing outside the eyes but changes the eye regions.
    blink = renderer.render(FaceState(eye_open=0.0))
    eye = closed.landmarks[36:42].mean(axis=0).round().astype(int)
    patch = (slice(eye[1] - 3, eye[1] + 4), slice(eye[0] - 3, eye[0] + 4))
    assert np.abs(blink.image[patch].astype(int) - closed.image[patch].astype(int)).mean() > 20


def test_identities_differ_and_do_not_depend_on_count() -> None:
    first, second = identity_for(0, 0), identity_for(0, 1)
    a, b = first.to_dict(), second.to_dict()
    assert sum(a[key] != b[key] for key in a) > 0.8 * len(a)
    assert json.loads(json.dumps(a)) == a  # JSON-serialisable as is
    assert Identity.from_dict(json.loads(json.dumps(a))) == first
    images = [FaceRenderer(ident, 128).render(FaceState()).image.astype(int) for ident in (first, second)]
    assert np.abs(images[0] - images[1]).mean() > 20
    styles = {identity_for(0, k).hair_style for k in range(24)}
    assert len(styles) >= 5


def test_same_seed_is_bit_identical_and_resumes(tmp_path: Path) -> None:
    summaries = [
        run_synth(tmp_path / name, identities=1, seconds=1.0, size=64, seed=3, progress=False) for name in "ab"
    ]
    assert summaries[0].generated == 1
    for name in ("landmarks.npy", "articulation.npy", "audio.wav", "identity.json"):
        files = [(tmp_path / d / "ground_truth" / "id0000_c00" / name).read_bytes() for d in "ab"]
        assert files[0] == files[1], name
    again = run_synth(tmp_path / "a", identities=1, seconds=1.0, size=64, seed=3, progress=False)
    assert (again.generated, again.skipped) == (0, 1)
    with pytest.raises(ValueError, match="size"):
        run_synth(tmp_path / "a", identities=1, seconds=1.0, size=128, seed=3, progress=False)
    other = run_synth(tmp_path / "c", identities=1, seconds=1.0, size=64, seed=4, progress=False)
    assert other.generated == 1
    audio = [np.load(tmp_path / d / "ground_truth" / "id0000_c00" / "articulation.npy") for d in "ac"]
    assert not np.array_equal(audio[0], audio[1])


@pytest.mark.parametrize("size", [128, 256, 512])
def test_render_sizes(size: int) -> None:
    frame = FaceRenderer(identity_for(0, 2), size).render(FaceState(articulation=(0.6, 0.3, 0.0, 0.0, 1.0)))
    assert frame.image.shape == (size, size, 3) and frame.image.dtype == np.uint8
    assert frame.landmarks.shape == (68, 2) and frame.landmarks.dtype == np.float32
    reference = FaceRenderer(identity_for(0, 2), 128).render(FaceState(articulation=(0.6, 0.3, 0.0, 0.0, 1.0)))
    np.testing.assert_allclose(frame.landmarks / size, reference.landmarks / 128, atol=0.5 / 128)


def test_speech_is_silent_in_pauses_and_follows_the_track() -> None:
    generator = np.random.default_rng(0)
    identity = identity_for(0, 0)
    track = sample_articulation(generator, 100, identity.speaking_rate)
    audio = synthesize_speech(track, identity, generator)
    assert audio.shape == (100 * SAMPLES_PER_FRAME,) and audio.dtype == np.float32
    assert np.abs(audio).max() <= 1.0
    rms = _frame_rms(audio, 100)
    pause = (track.frames[:, JAW_OPEN] < 0.01) & (track.frames[:, VOICING] < 0.01)
    speech = track.frames[:, JAW_OPEN] > 0.6
    assert pause.any() and speech.any()
    assert rms[pause].mean() < 0.05 * rms[speech].mean()


def test_contact_sheet(tmp_path: Path) -> None:
    path = make_contact_sheet(tmp_path / "sheet.png", size=64, identities=2, seed=0)
    sheet = cv2.imread(str(path))
    assert sheet.shape == (2 * 64 + 2, 6 * 64 + 5 * 2, 3)
