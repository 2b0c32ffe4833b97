"""Face analysis for real videos: detection, 68-point landmarks, main-face tracking and smoothing.

Stage ② (preprocess), between frame decoding and cropping (:mod:`difftalk.preprocess.crop`).
:class:`FaceAnalyzer` wraps dlib (HOG or MMOD-CNN detector, 68-point shape predictor): set up once,
call per frame. The main face is followed, streaming, by :class:`FaceTracker` (constant memory;
full-frame detection only to (re)acquire the face, in between a cheap detection in a small region
around the last box, or a landmark re-fit from the previous frame). A whole video's track, gap-filled,
smoothed and with its crop boxes, is :func:`difftalk.preprocess.track.track_face`.

Licence: dlib's 68-point model (``shape_predictor_68_face_landmarks.dat``, shipped by
face-recognition-models) is trained on iBUG 300-W and is for **non-commercial use only**.
Install with ``pip install 'difftalk[face]'``.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from difftalk.errors import MissingExtraError
from difftalk.preprocess.landmarks import CONDITION_POINTS, NUM_LANDMARKS

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "Install the optional face extra: pip install 'difftalk[face]' (dlib-bin + face-recognition-models). "
    "Note: dlib's 68-point landmark model is trained on iBUG 300-W and is licensed for non-commercial use only."
)
LANDMARK_MODEL = "shape_predictor_68_face_landmarks.dat"
CNN_MODEL = "mmod_human_face_detector.dat"


def _import_dlib() -> Any:
    try:
        import dlib
    except ImportError as error:
        raise MissingExtraError(f"Face analysis needs dlib, which is not installed. {INSTALL_HINT}") from error
    return dlib


def default_models_dir() -> Path:
    """The ``models/`` folder of face-recognition-models, found without importing it (it needs pkg_resources).

    Raises:
        MissingExtraError: if the package is not installed (the message names ``difftalk[face]``).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise MissingExtraError(f"Face analysis needs face-recognition-models, which is not installed. {INSTALL_HINT}")
    return Path(spec.origin).parent / "models"


@dataclass(frozen=True, eq=False)
class FaceDetection:
    """One detected face: ``box`` ``(4,)`` float32 ``x0, y0, x1, y1`` frame pixels (x1, y1 exclusive) and
    ``score``, the detector confidence (dlib HOG SVM margin, roughly [-0.5, 3], or MMOD-CNN confidence)."""

    box: np.ndarray
    score: float


@dataclass(frozen=True, eq=False)
class Face:
    """A face: detector-style ``box`` (as :class:`FaceDetection`, not the crop box), its ``score``, and
    ``landmarks`` ``(68, 2)`` float32 iBUG points ``(x, y)`` in frame pixels."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray


def _model_file(folder: Path, name: str) -> str:
    if not (folder / name).is_file():
        raise FileNotFoundError(f"dlib model file not found: {folder / name}. {INSTALL_HINT}")
    return str(folder / name)


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 numpy image, got {type(image).__name__} {getattr(image, 'dtype', '')}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"expected an (H, W, 3) RGB or (H, W) grey image, got shape {image.shape}")
    return np.ascontiguousarray(image)


def _to_gray(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``(4,)`` boxes ``x0, y0, x1, y1``."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = float(iw * ih)
    return inter / float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _centre_side(box: np.ndarray) -> tuple[float, float, float]:
    width, height = float(box[2] - box[0]), float(box[3] - box[1])
    return float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2, math.sqrt(max(width * height, 1e-6))


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    """Centre distance in units of the mean side, or inf if the sizes differ by more than 1.6×."""
    ax, ay, aside = _centre_side(a)
    bx, by, bside = _centre_side(b)
    if max(aside, bside) / min(aside, bside) > 1.6:
        return math.inf
    return math.hypot(ax - bx, ay - by) / ((aside + bside) / 2)


def _prominence(box: np.ndarray, frame_size: tuple[int, int] | None) -> float:
    """Side length, discounted up to 50 % towards the frame corners (the main speaker is big and central)."""
    cx, cy, side = _centre_side(box)
    if frame_size is None:
        return side
    height, width = frame_size
    offset = math.hypot(cx - width / 2, cy - height / 2) / math.hypot(width / 2, height / 2)
    return side * (1.0 - 0.5 * min(offset, 1.0))


class FaceAnalyzer:
    """dlib face detector + 68-point shape predictor. Set up once, call per frame.

    Args:
        detector: ``"hog"`` (fast, frontal faces; min face ~80 px in the detection image) or
            ``"cnn"`` (MMOD, more pose-robust, ~100× slower on CPU).
        detect_max_side: frames are downscaled so their longer side is at most this before full-frame
            detection (boxes are mapped back). With HOG the smallest face found is then about
            ``80 * max(H, W) / detect_max_side`` frame pixels (160 px at 720p).
        upsample: dlib upsampling passes of the detection image (0 or 1; 1 finds 2× smaller faces, 4× slower).
        min_score: detections scoring at or below this are dropped.
        models_dir: folder holding the ``.dat`` files; default: face-recognition-models' ``models/``.

    Raises:
        MissingExtraError: if dlib or face-recognition-models is missing (names ``difftalk[face]``).
        FileNotFoundError: if a model file is missing.
    """

    def __init__(
        self,
        detector: Literal["hog", "cnn"] = "hog",
        detect_max_side: int = 640,
        upsample: int = 0,
        min_score: float = 0.0,
        models_dir: str | Path | None = None,
    ) -> None:
        if detector not in ("hog", "cnn"):
            raise ValueError(f"detector must be 'hog' or 'cnn', got {detector!r}")
        if detect_max_side < 80:
            raise ValueError(f"detect_max_side must be >= 80 (the HOG window), got {detect_max_side}")
        if upsample not in (0, 1, 2):
            raise ValueError(f"upsample must be 0, 1 or 2, got {upsample}")
        self.detector = detector
        self.detect_max_side = detect_max_side
        self.upsample = upsample
        self.min_score = min_score
        self._dlib = _import_dlib()
        folder = Path(models_dir) if models_dir is not None else default_models_dir()
        self._predictor = self._dlib.shape_predictor(_model_file(folder, LANDMARK_MODEL))
        if detector == "hog":
            self._detector = self._dlib.get_frontal_face_detector()
        else:
            self._detector = self._dlib.cnn_face_detection_model_v1(_model_file(folder, CNN_MODEL))
        logger.debug("FaceAnalyzer ready: %s detector, models from %s", detector, folder)

    def _run(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Detector on a prepared image (grey for HOG, RGB for CNN); boxes in that image's pixels."""
        if self.detector == "hog":
            rects, scores, _ = self._detector.run(image, self.upsample, self.min_score)
            pairs = list(zip(rects, scores, strict=True))
        else:
            pairs = [(d.rect, d.confidence) for d in self._detector(image, self.upsample)]
        return [
            (np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], dtype=np.float32), float(s))
            for r, s in pairs
            if s > self.min_score
        ]

    def _detect_scaled(self, region: np.ndarray, scale: float, origin: tuple[float, float]) -> list[FaceDetection]:
        prepared = _to_gray(region) if self.detector == "hog" else region
        if scale != 1.0:
            size = (max(1, round(region.shape[1] * scale)), max(1, round(region.shape[0] * scale)))
            interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
            prepared = cv2.resize(prepared, size, interpolation=interpolation)
        offset = np.array([origin[0], origin[1], origin[0], origin[1]], dtype=np.float32)
        found = [FaceDetection(box / np.float32(scale) + offset, score) for box, score in self._run(prepared)]
        return sorted(found, key=lambda d: -d.score)

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        """All faces in a ``(H, W, 3)`` uint8 RGB (or ``(H, W)`` grey) frame, best score first; boxes in
        frame pixels; empty if there is no face."""
        image = _check_image(image)
        scale = min(1.0, self.detect_max_side / max(image.shape[:2]))
        return self._detect_scaled(image, scale, (0.0, 0.0))

    def detect_near(
        self, image: np.ndarray, box: np.ndarray, context: float = 2.0, face_px: int = 100
    ) -> list[FaceDetection]:
        """Cheap re-detection (~3.5 ms with HOG) in a square of ``context`` × the side of ``box`` (a ``(4,)``
        detector box in frame pixels), resized so that a face of that size is ``face_px`` pixels (HOG
        needs >= 80). Returns detections in frame pixels, best score first."""
        image = _check_image(image)
        cx, cy, side = _centre_side(box)
        half = context * side / 2
        height, width = image.shape[:2]
        x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
        x1, y1 = min(width, math.ceil(cx + half)), min(height, math.ceil(cy + half))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return []
        scale = min(face_px / side, 2.0)
        return self._detect_scaled(image[y0:y1, x0:x1], scale, (float(x0), float(y0)))

    def landmarks(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """68 iBUG landmarks ``(68, 2)`` float32 ``(x, y)`` in frame pixels (integer-valued, may lie outside
        the frame) inside a detector-style ``box`` (as from :meth:`detect`), fitted on the full-resolution
        ``(H, W, 3)`` uint8 RGB frame. ~0.8 ms; dlib reads only pixels near the box."""
        image = _check_image(image)
        x0, y0, x1, y1 = (round(float(v)) for v in box)
        shape = self._predictor(image, self._dlib.rectangle(x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32).reshape(NUM_LANDMARKS, 2)

    def analyze(self, image: np.ndarray) -> list[Face]:
        """:meth:`detect` then :meth:`landmarks` for every face, best score first."""
        image = _check_image(image)
        return [Face(d.box, d.score, self.landmarks(image, d.box)) for d in self.detect(image)]


def _shape_scale(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre and RMS radius of the mouth-free points (they do not move with the jaw)."""
    points = landmarks[list(CONDITION_POINTS)].astype(np.float64)
    centre = points.mean(axis=0)
    return centre, float(np.sqrt(((points - centre) ** 2).sum(axis=1).mean()))


@dataclass(eq=False)
class FaceTracker:
    """Streaming main-face tracker: call :meth:`update` once per frame; keeps O(1) state.

    The first face found (the most prominent: large and central) becomes the main face; afterwards
    only a detection near its last box is accepted, so the tracker never jumps to another person. If
    the face is missing for more than ``patience`` frames, the track is dropped and any face may be
    acquired again.

    Args:
        analyzer: the detector and landmark model.
        mode: ``"local"``: each frame re-detects inside a small region around the last box (verified,
            ~4 ms at 720p); ``"refit"``: landmarks are re-fitted from the previous frame's landmarks
            without detection (~1.5 ms) and a full detection runs every ``redetect_every`` frames.
        redetect_every: full-detection period in ``"refit"`` mode.
        patience: frames a lost face is searched for near its last position before the track is dropped.
    """

    analyzer: FaceAnalyzer
    mode: Literal["local", "refit"] = "local"
    redetect_every: int = 10
    patience: int = 25
    # How often each path ran (for profiling).
    counts: dict[str, int] = field(default_factory=lambda: {"full": 0, "local": 0, "refit": 0, "missed": 0})
    _last: Face | None = field(default=None, init=False, repr=False)
    _lost: int = field(default=0, init=False, repr=False)
    _since_detect: int = field(default=0, init=False, repr=False)
    _box_offset: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in ("local", "refit"):
            raise ValueError(f"mode must be 'local' or 'refit', got {self.mode!r}")
        if self.redetect_every < 1 or self.patience < 0:
            raise ValueError(f"need redetect_every >= 1 and patience >= 0, got {self.redetect_every}, {self.patience}")

    def reset(self) -> None:
        """Forget the current face (start of a new video)."""
        self._last, self._lost, self._since_detect, self._box_offset = None, 0, 0, None

    def update(self, image: np.ndarray) -> Face | None:
        """The main face in the next ``(H, W, 3)`` uint8 RGB frame, or None if it is not visible."""
        image = _check_image(image)
        face = self._follow(image) if self._last is not None and self._lost == 0 else None
        if face is None:
            face = self._acquire(image)
        if face is None:
            self.counts["missed"] += 1
            self._lost += 1
            if self._lost > self.patience:
                self._last = None
            return None
        self._last, self._lost = face, 0
        return face

    def _follow(self, image: np.ndarray) -> Face | None:
        assert self._last is not None
        last = self._last
        if self.mode == "local":
            self.counts["local"] += 1
            near = [(_distance(d.box, last.box), d) for d in self.analyzer.detect_near(image, last.box)]
            near = [(dist, d) for dist, d in near if dist <= 0.5]
            if not near:
                return None
            best = min(near, key=lambda pair: pair[0])[1]
            return Face(best.box, best.score, self.analyzer.landmarks(image, best.box))
        if self._since_detect >= self.redetect_every or self._box_offset is None:
            return None
        self.counts["refit"] += 1
        self._since_detect += 1
        centre, radius = _shape_scale(last.landmarks)
        box = np.concatenate([centre, centre]) + self._box_offset * radius
        landmarks = self.analyzer.landmarks(image, box)
        new_radius = _shape_scale(landmarks)[1]
        if not 0.8 <= new_radius / max(radius, 1e-6) <= 1.25:
            return None  # implausible jump: let a full detection decide
        return Face(box.astype(np.float32), last.score, landmarks)

    def _acquire(self, image: np.ndarray) -> Face | None:
        self.counts["full"] += 1
        detections = self.analyzer.detect(image)
        if self._last is not None:
            tolerance = 0.5 if self._lost == 0 else 1.0
            scored = [(_distance(d.box, self._last.box), d) for d in detections]
            scored = [(dist, d) for dist, d in scored if dist <= tolerance]
            chosen = min(scored, key=lambda pair: pair[0])[1] if scored else None
        else:
            frame_size = (image.shape[0], image.shape[1])
            chosen = max(detections, key=lambda d: _prominence(d.box, frame_size), default=None)
        if chosen is None:
            return None
        landmarks = self.analyzer.landmarks(image, chosen.box)
        centre, radius = _shape_scale(landmarks)
        self._box_offset = (chosen.box - np.concatenate([centre, centre])) / max(radius, 1e-6)
        self._since_detect = 0
        return Face(chosen.box, chosen.score, landmarks)
