"""Small, fast stand-ins for tests: a parametric 68-point face and a prepared dataset written directly."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from skimage import data

from difftalk.io.video import VideoWriter
from difftalk.preprocess.audio_features import compute_features
from difftalk.preprocess.manifest import ClipWriter, assign_splits, write_manifest


def face_landmarks(size: int, opening: float, dx: float = 0.0) -> np.ndarray:
    """68 iBUG-layout points of a frontal face in a ``size``² crop; the jaw and lips follow ``opening``."""
    s = size
    cx, cy = 0.5 * s + dx, 0.45 * s
    pts = np.zeros((68, 2), np.float32)
    jaw_drop = 0.06 * s * opening
    for i in range(17):  # jaw: ear to ear through the chin
        angle = np.pi * (i / 16)
        drop = jaw_drop * np.sin(angle) ** 2
        pts[i] = [cx - 0.3 * s * np.cos(angle), cy + 0.05 * s + 0.33 * s * np.sin(angle) + drop]
    for i in range(5):
        pts[17 + i] = [cx - 0.22 * s + 0.04 * s * i, cy - 0.13 * s - 0.02 * s * np.sin(np.pi * i / 4)]
        pts[22 + i] = [cx + 0.06 * s + 0.04 * s * i, cy - 0.13 * s - 0.02 * s * np.sin(np.pi * i / 4)]
    for i in range(4):
        pts[27 + i] = [cx, cy - 0.08 * s + 0.05 * s * i]
    for i in range(5):
        pts[31 + i] = [cx - 0.05 * s + 0.025 * s * i, cy + 0.09 * s]
    for side, x0 in ((36, cx - 0.17 * s), (42, cx + 0.07 * s)):
        for i in range(6):
            angle = 2 * np.pi * i / 6
            pts[side + i] = [x0 + 0.05 * s * (1 - np.cos(angle)), cy - 0.06 * s - 0.015 * s * np.sin(angle)]
    mouth_y = cy + 0.19 * s + jaw_drop / 2
    for i in range(12):
        angle = 2 * np.pi * i / 12
        pts[48 + i] = [cx - 0.1 * s * np.cos(angle), mouth_y - (0.02 * s + 0.05 * s * opening) * np.sin(angle)]
    for i in range(8):
        angle = 2 * np.pi * i / 8
        pts[60 + i] = [cx - 0.07 * s * np.cos(angle), mouth_y - 0.045 * s * opening * np.sin(angle)]
    return pts


def draw_face(size: int, landmarks: np.ndarray, skin: tuple[int, int, int]) -> np.ndarray:
    """A flat cartoon of ``landmarks`` (uint8 RGB)."""
    image = np.full((size, size, 3), (60, 90, 140), np.uint8)
    jaw = landmarks[:17].astype(np.int32)
    top = np.array([[jaw[16][0], int(jaw[16][1] - 0.35 * size)], [jaw[0][0], int(jaw[0][1] - 0.35 * size)]])
    cv2.fillPoly(image, [np.concatenate([jaw, top]).astype(np.int32)], skin)
    for eye in (landmarks[36:42], landmarks[42:48]):
        cv2.fillPoly(image, [eye.astype(np.int32)], (20, 20, 30))
    cv2.fillPoly(image, [landmarks[48:60].astype(np.int32)], (150, 40, 50))
    cv2.fillPoly(image, [landmarks[60:68].astype(np.int32)], (40, 10, 10))
    return image


def make_prepared_dataset(
    root: Path, identities: int = 3, frames: int = 40, size: int = 64, test_identities: int = 1
) -> Path:
    """Write a prepared dataset (docs/formats.md) of ``identities`` clips; the mouth follows a tone envelope."""
    rng = np.random.default_rng(0)
    metas = []
    for k in range(identities):
        name = f"id{k:04d}_c00"
        t = np.arange(frames) / 25.0
        opening = 0.5 + 0.5 * np.sin(2 * np.pi * (1.3 + 0.2 * k) * t)
        audio_t = np.arange(int(frames / 25 * 16000)) / 16000
        envelope = np.interp(audio_t, t, opening)
        audio = (0.3 * envelope * np.sin(2 * np.pi * (150 + 40 * k) * audio_t)).astype(np.float32)
        r, g, b = (int(v) for v in rng.integers(120, 240, 3))
        skin = (r, g, b)
        writer = ClipWriter(root / "clips" / name, [size])
        landmarks = []
        for i in range(frames):
            points = face_landmarks(size, float(opening[i]), dx=2 * np.sin(i / 7))
            landmarks.append(points)
            writer.write_frame([draw_face(size, points, skin)])
        writer.write_array("landmarks", np.stack(landmarks))
        found = np.ones(frames, bool)
        found[3] = False  # one frame without a face
        writer.write_array("face_found", found)
        writer.write_array("boxes", np.tile(np.array([0, 0, size, size], np.float32), (frames, 1)))
        writer.write_audio(audio)
        writer.write_array("features/mel", compute_features(audio, frames))
        writer.write_array("articulation", np.stack([opening, 0 * opening, 0 * opening, 0 * opening, opening > 0.1], 1))
        meta = {"name": name, "identity": f"id{k:04d}", "fps": 25.0, "num_frames": frames, "crop_size": size}
        writer.finish(meta)
        metas.append(meta)
    fixed = {f"id{k:04d}": ("test" if k >= identities - test_identities else "train") for k in range(identities)}
    write_manifest(root, metas, assign_splits(fixed, 0.0, 0, fixed), {"fps": 25.0, "crop_size": size})
    return root


def astronaut_video(path, fps=30.0, seconds=1.6, faceless=False):
    """A video of skimage's astronaut moving in a 640×480 frame, with a tone as audio (returned)."""
    face = data.astronaut()[0:400, 50:450]  # the face is ~90 px wide, as dlib's HOG detector likes it
    rng = np.random.default_rng(0)
    frames = int(seconds * fps)
    t = np.arange(int(seconds * 16000)) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    with VideoWriter(path, fps=fps, audio=audio) as writer:
        for i in range(frames):
            canvas = np.full((480, 640, 3), 90, np.uint8)
            if faceless:
                canvas = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
            else:
                x, y = 100 + int(20 * np.sin(i / 8)), 40 + int(5 * np.cos(i / 5))
                canvas[y : y + 400, x : x + 400] = face
            writer.write(canvas)
    return audio


def two_face_frame(image: np.ndarray, dx: int = 0) -> np.ndarray:
    """A 1.3× head of ``image`` (skimage's astronaut) on the left and a smaller (1×) copy on the right,
    the big one shifted right by ``dx``: ``(420, 640, 3)`` uint8."""
    head = image[0:300, 60:380]
    canvas = np.full((420, 640, 3), 120, np.uint8)
    big = cv2.resize(head, None, fx=1.3, fy=1.3)[:420, : 320 - dx]
    canvas[: big.shape[0], dx : dx + big.shape[1]] = big
    canvas[60:360, 320:640] = head
    return canvas
