"""Fill missing frames in face tracks and remove jitter (centred Savitzky–Golay, no lag).

Stage ② (preprocess), between tracking (:mod:`difftalk.preprocess.face`) and cropping. The crop box is
smoothed most (it frames every crop); the points that do not move with speech are smoothed lightly;
lips and lower jaw are only gap-filled, so fast mouth motion is kept.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import savgol_filter

from difftalk.preprocess.landmarks import LOWER_JAW, MOUTH, NUM_LANDMARKS

MOUTH_POINTS = tuple(sorted(set(MOUTH + LOWER_JAW)))
"""Points that move with speech: left unsmoothed."""


def _missing_runs(missing: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` of each run of True."""
    padded = np.concatenate([[False], missing, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _fill_and_smooth(values: np.ndarray, window: int, polyorder: int, max_gap: int | None) -> np.ndarray:
    """``(N, D)`` float64 with NaN rows → gaps filled (linear inside, held at the ends), then
    Savitzky–Golay per column over each finite run. Gaps longer than ``max_gap`` stay NaN."""
    if window > 1 and (window % 2 == 0 or window <= polyorder):
        raise ValueError(f"window must be odd and > polyorder ({polyorder}), got {window}")
    missing = ~np.isfinite(values).all(axis=1)
    if missing.all():
        return np.full_like(values, np.nan)
    out = values.copy()
    if missing.any():
        index = np.arange(len(values))
        for column in range(values.shape[1]):
            out[:, column] = np.interp(index, index[~missing], values[~missing, column])
        if max_gap is not None:
            for start, end in _missing_runs(missing):
                if end - start > max_gap:
                    out[start:end] = np.nan
    if window <= 1:
        return out
    for start, end in _missing_runs(np.isfinite(out).all(axis=1)):
        length = end - start
        size = min(window, length if length % 2 else length - 1)
        if size > polyorder:
            out[start:end] = savgol_filter(out[start:end], size, polyorder, axis=0, mode="interp")
    return out


def smooth_boxes(boxes: np.ndarray, window: int = 9, polyorder: int = 2, max_gap: int | None = None) -> np.ndarray:
    """Fill missing frames and remove jitter from a box track (the crop box matters most).

    Centre, log-width and log-height are interpolated over NaN rows (ends hold the nearest box) and
    smoothed by a centred Savitzky–Golay filter (no lag; 9 frames = 0.36 s at 25 fps). Squares stay square.

    Args:
        boxes: ``(N, 4)`` ``x0, y0, x1, y1`` frame pixels, NaN rows for missing frames.
        window, polyorder: filter length in frames (odd; 1 = fill only) and polynomial order (< window).
        max_gap: gaps longer than this stay NaN; None fills all.

    Returns:
        ``(N, 4)`` float32 boxes; all NaN if no frame had a box.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"expected (N, 4) boxes, got {boxes.shape}")
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        params = np.stack(
            [(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2, np.log(width), np.log(height)], 1
        )
    params = _fill_and_smooth(params, window, polyorder, max_gap)
    half_w, half_h = np.exp(params[:, 2]) / 2, np.exp(params[:, 3]) / 2
    out = np.stack([params[:, 0] - half_w, params[:, 1] - half_h, params[:, 0] + half_w, params[:, 1] + half_h], 1)
    return out.astype(np.float32)


def smooth_landmark_track(
    landmarks: np.ndarray, window: int = 5, polyorder: int = 2, mouth_window: int = 1, max_gap: int | None = None
) -> np.ndarray:
    """Fill missing frames and lightly smooth a landmark track, keeping fast mouth motion.

    Args:
        landmarks: ``(N, 68, 2)`` frame pixels, NaN rows for missing frames.
        window, polyorder: Savitzky–Golay length (odd; 1 = none) and order for the points that do not
            move with speech.
        mouth_window: the length for lips and lower jaw (:data:`MOUTH_POINTS`); 1 = left raw (gap-filled only).
        max_gap: gaps longer than this stay NaN; None fills all.

    Returns:
        ``(N, 68, 2)`` float32 frame pixels.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.ndim != 3 or landmarks.shape[1:] != (NUM_LANDMARKS, 2):
        raise ValueError(f"expected (N, 68, 2) landmarks, got {landmarks.shape}")
    num_frames = len(landmarks)
    rows_missing = ~np.isfinite(landmarks).all(axis=(1, 2))
    landmarks = landmarks.copy()
    landmarks[rows_missing] = np.nan
    out = np.empty_like(landmarks)
    mouth = list(MOUTH_POINTS)
    rest = [i for i in range(NUM_LANDMARKS) if i not in MOUTH_POINTS]
    for points, size in ((rest, window), (mouth, mouth_window)):
        flat = landmarks[:, points].reshape(num_frames, -1)
        out[:, points] = _fill_and_smooth(flat, size, polyorder, max_gap).reshape(num_frames, len(points), 2)
    return out.astype(np.float32)
