"""Source–filter speech synthesis driven by an articulation track (stage ⓪).

A Klatt-style cascade synthesiser at 16 kHz, written with block-wise ``scipy.signal.sosfilt`` calls
that carry the filter state from block to block (no per-sample Python loop):

* **Glottal source** — Rosenberg glottal-flow pulses (differentiated, which includes lip radiation) at
  the speaker's F0 with a slow intonation contour (phrase declination + stress bumps), random
  wander and jitter; aspiration noise mixed in by the speaker's breathiness.
* **Vocal tract** — four second-order resonators F1–F4 in cascade, updated every 4 ms from the
  articulation: F1 rises with jaw opening (≈ 260 → 800 Hz), F2 rises with lip spreading and falls
  with rounding (≈ 700 → 2200 Hz), F3 follows spreading/rounding; all scaled by the speaker's
  formant scale (vocal-tract length). Oral amplitude grows with jaw opening and is cut by lip
  closure and by lingual stops.
* **Consonants** — a nasal murmur (low resonance) for m/n and a voice bar for voiced stops; band-pass
  frication noise for fricatives; at each stop release a short noise burst, followed by aspiration
  for p/t/k. Pauses are silent apart from a −80 dB noise floor.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy import signal
from scipy.ndimage import gaussian_filter1d

from difftalk.synth.articulation import (
    JAW_OPEN,
    LIP_CLOSURE,
    LIP_ROUND,
    LIP_SPREAD,
    VOICING,
    ArticulationTrack,
    Segment,
)
from difftalk.synth.identity import Identity

logger = logging.getLogger(__name__)

BLOCK = 64
"""Samples per formant-update block (4 ms at 16 kHz)."""
PEAK_LEVEL = 0.6
"""The 99.9th percentile of |audio| is scaled to this level."""
BANDWIDTHS = (80.0, 100.0, 140.0, 250.0)
"""Formant bandwidths B1-B4 in Hz."""


def formant_tracks(samples: np.ndarray, formant_scale: float) -> np.ndarray:
    """Formant frequencies F1-F4 from articulation.

    Args:
        samples: ``(S, 5)`` articulation in [0, 1].
        formant_scale: speaker's formant multiplier.

    Returns:
        ``(S, 4)`` float64 Hz.
    """
    jaw, spread, rnd = samples[:, JAW_OPEN], samples[:, LIP_SPREAD], samples[:, LIP_ROUND]
    f1 = (260.0 + 560.0 * jaw) * (1.0 - 0.12 * rnd)
    f2 = 1150.0 + 1050.0 * spread - 450.0 * rnd
    f3 = 2450.0 + 350.0 * spread - 250.0 * rnd
    f4 = np.full_like(f1, 3400.0)
    return np.stack([f1, f2, f3, f4], axis=1).astype(np.float64) * formant_scale


def _resonator_sos(frequencies: np.ndarray, bandwidths: np.ndarray, sample_rate: int) -> np.ndarray:
    """Second-order sections ``(K, 6)`` of unity-DC-gain resonators (Klatt 1980)."""
    r = np.exp(-np.pi * bandwidths / sample_rate)
    theta = 2.0 * np.pi * frequencies / sample_rate
    a1, a2 = -2.0 * r * np.cos(theta), r * r
    gain = 1.0 + a1 + a2
    zeros = np.zeros_like(gain)
    return np.stack([gain, zeros, zeros, np.ones_like(gain), a1, a2], axis=-1)


def _segment_controls(segments: tuple[Segment, ...], num_samples: int, sample_rate: int) -> dict[str, np.ndarray]:
    """Per-sample acoustic controls (frication bands, nasality, stops, bursts) from the segment list."""
    rate = 1000  # control rate in Hz, interpolated to audio rate afterwards
    n_ctrl = math.ceil(num_samples / sample_rate * rate) + 1
    nasal = np.zeros(n_ctrl)
    stop = np.zeros(n_ctrl)
    voice_bar = np.zeros(n_ctrl)
    aspiration = np.zeros(n_ctrl)
    frication: dict[float, np.ndarray] = {}
    bursts: list[tuple[int, float, float]] = []  # (sample, centre Hz, gain)
    for index, segment in enumerate(segments):
        phoneme = segment.phoneme
        a, b = round(segment.start * rate), min(round(segment.end * rate), n_ctrl)
        if phoneme.nasal:
            nasal[a:b] = 1.0
        if phoneme.oral_stop:
            stop[a:b] = 1.0
            if phoneme.target[VOICING] > 0.5:
                voice_bar[a:b] = 1.0
            following = segments[index + 1].symbol if index + 1 < len(segments) else "_"
            centre = {"p": 900.0, "b": 900.0, "t": 4000.0, "d": 3500.0, "k": 1800.0, "g": 1600.0}[phoneme.symbol]
            if following != "_" or phoneme.aspirated:
                bursts.append((round(segment.end * sample_rate), centre, 0.9 if phoneme.aspirated else 0.5))
            if phoneme.aspirated:
                aspiration[b : min(b + 45, n_ctrl)] = 1.0
        if phoneme.frication_hz > 0:
            band = frication.setdefault(phoneme.frication_hz, np.zeros(n_ctrl))
            band[a:b] = phoneme.frication_gain
        if phoneme.symbol == "h":
            aspiration[a:b] = 1.0
    audio_times = np.arange(num_samples) / sample_rate
    ctrl_times = np.arange(n_ctrl) / rate

    def to_audio(track: np.ndarray, sigma_ms: float) -> np.ndarray:
        smooth = gaussian_filter1d(track, sigma_ms * rate / 1000.0, mode="nearest")
        return np.interp(audio_times, ctrl_times, smooth)

    controls = {
        "nasal": to_audio(nasal, 10.0),
        "stop": to_audio(stop, 4.0),
        "voice_bar": to_audio(voice_bar, 6.0),
        "aspiration": to_audio(aspiration, 8.0),
    }
    for centre, band in frication.items():
        controls[f"frication_{centre:.0f}"] = to_audio(band, 12.0)
    burst_env = np.zeros(num_samples)
    burst_centres = np.zeros(num_samples)
    decay = np.exp(-np.arange(int(0.012 * sample_rate)) / (0.003 * sample_rate))
    for start, centre, gain in bursts:
        if start >= num_samples:
            continue
        part = decay[: num_samples - start] * gain
        burst_env[start : start + part.size] = np.maximum(burst_env[start : start + part.size], part)
        burst_centres[start : start + part.size] = centre
    controls["burst"] = burst_env
    controls["burst_centre"] = burst_centres
    return controls


def _f0_contour(
    track: ArticulationTrack, identity: Identity, generator: np.random.Generator, num_samples: int
) -> np.ndarray:
    """Per-sample F0 in Hz: declination per phrase, stress bumps, slow wander and jitter."""
    rate = 200
    n_ctrl = math.ceil(num_samples / track.sample_rate * rate) + 1
    contour = np.zeros(n_ctrl)
    phrase_start = 0.0
    for segment in track.segments:
        a, b = round(segment.start * rate), min(round(segment.end * rate), n_ctrl)
        if segment.symbol == "_":
            phrase_start = segment.end
            continue
        # Declination: starts high and falls by ≈ one intonation depth over two seconds.
        times = np.arange(a, b) / rate
        contour[a:b] = 0.6 - 0.5 * np.minimum((times - phrase_start) / 2.0, 1.6)
        if segment.phoneme.kind == "vowel":
            contour[a:b] += 3.0 * (segment.emphasis - 0.95)
    wander = gaussian_filter1d(generator.normal(0.0, 1.0, n_ctrl), 0.25 * rate, mode="wrap")
    wander /= max(float(np.std(wander)), 1e-6)
    contour = gaussian_filter1d(contour, 0.04 * rate, mode="nearest") + 0.4 * wander
    ctrl_times = np.arange(n_ctrl) / rate
    times = np.arange(num_samples) / track.sample_rate
    f0 = identity.f0_hz * (1.0 + identity.intonation * np.interp(times, ctrl_times, contour))
    jitter = gaussian_filter1d(generator.normal(0.0, 1.0, num_samples // 40 + 2), 1.0)
    jitter = np.interp(times, np.arange(jitter.size) * 40 / track.sample_rate, jitter)
    return np.clip(f0 * (1.0 + 0.012 * jitter), 50.0, 400.0)


def glottal_source(f0: np.ndarray, sample_rate: int, open_quotient: float = 0.6) -> np.ndarray:
    """Differentiated Rosenberg glottal pulses, vectorised over samples.

    Args:
        f0: ``(S,)`` fundamental frequency in Hz per sample.
        sample_rate: Hz.
        open_quotient: open phase as a fraction of the period (rising 2/3, falling 1/3).

    Returns:
        ``(S,)`` float64 excitation with peak magnitude ≈ 10, independent of F0.
    """
    phase = np.cumsum(f0) / sample_rate
    frac = phase - np.floor(phase)
    rise, fall = open_quotient * 2 / 3, open_quotient / 3
    flow = np.where(
        frac < rise,
        0.5 * (1.0 - np.cos(np.pi * frac / rise)),
        np.where(frac < rise + fall, np.cos(0.5 * np.pi * (frac - rise) / fall), 0.0),
    )
    return np.diff(flow, prepend=0.0) * sample_rate / f0


def synthesize_speech(track: ArticulationTrack, identity: Identity, generator: np.random.Generator) -> np.ndarray:
    """Synthesise the speech of one clip.

    Args:
        track: articulation (its ``samples`` fix the length: ``(S, 5)`` at ``track.sample_rate``).
        identity: voice parameters (F0, formant scale, intonation, breathiness).
        generator: source of the noise, jitter and F0 wander.

    Returns:
        ``(S,)`` float32 mono audio in [-1, 1] at ``track.sample_rate`` (16 kHz).
    """
    sr = track.sample_rate
    art = track.samples.astype(np.float64)
    n = int(art.shape[0])
    jaw, closure, voicing = art[:, JAW_OPEN], art[:, LIP_CLOSURE], art[:, VOICING]
    ctrl = _segment_controls(track.segments, n, sr)
    noise = generator.standard_normal(n)
    noise2 = generator.standard_normal(n)

    f0 = _f0_contour(track, identity, generator, n)
    source = glottal_source(f0, sr)
    lips_open = 1.0 - closure
    oral_gain = lips_open * (1.0 - ctrl["stop"]) * (0.1 + 0.9 * jaw) ** 1.3
    oral_gain *= 1.0 - 0.7 * ctrl["nasal"]
    voiced = source * voicing * oral_gain
    aspiration = noise * (
        0.6 * identity.breathiness * voicing * oral_gain + 1.2 * ctrl["aspiration"] * (0.3 + jaw) * lips_open
    )
    # Noise bursts at stop releases excite the vocal tract as well.
    tract_input = voiced + aspiration + 2.5 * noise2 * ctrl["burst"] * (ctrl["burst_centre"] < 1000)

    formants = formant_tracks(art, identity.formant_scale)
    bandwidths = np.asarray(BANDWIDTHS) * np.sqrt(identity.formant_scale)
    nyquist_guard = 0.45 * sr
    output = np.empty(n)
    state = np.zeros((4, 2))
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        centre = np.minimum(formants[start:stop].mean(axis=0), nyquist_guard)
        sos = _resonator_sos(centre, bandwidths, sr)
        output[start:stop], state = signal.sosfilt(sos, tract_input[start:stop], zi=state)

    # Parallel branches with fixed filters: nasal murmur / voice bar, frication bands, release bursts.
    murmur_gain = voicing * (0.35 * ctrl["nasal"] + 0.25 * ctrl["voice_bar"])
    murmur_sos = _resonator_sos(np.array([250.0 * identity.formant_scale]), np.array([100.0]), sr)
    output += signal.sosfilt(murmur_sos, source * murmur_gain)
    for key, gain in ctrl.items():
        if not key.startswith("frication_"):
            continue
        centre = min(float(key.split("_")[1]) * identity.formant_scale, 0.9 * sr / 2)
        low, high = centre / 1.5, min(centre * 1.4, 0.95 * sr / 2)
        band = signal.butter(2, [low, high], btype="bandpass", fs=sr, output="sos")
        output += 0.4 * signal.sosfilt(band, noise) * gain
    for centre in np.unique(ctrl["burst_centre"][ctrl["burst"] > 0]):
        if centre < 1000:
            continue
        band = signal.butter(2, [centre / 1.6, min(centre * 1.6, 0.95 * sr / 2)], "bandpass", fs=sr, output="sos")
        mask = ctrl["burst"] * (ctrl["burst_centre"] == centre)
        output += 0.6 * signal.sosfilt(band, noise2) * mask

    output = signal.sosfilt(signal.butter(2, 60.0, btype="highpass", fs=sr, output="sos"), output)
    level = float(np.percentile(np.abs(output), 99.9))
    if level > 0:
        output *= PEAK_LEVEL / level
    output += 1e-4 * noise2[::-1]  # noise floor (≈ −80 dBFS), independent of the bursts
    return np.clip(output, -1.0, 1.0).astype(np.float32)
