"""Identity parameters of a synthetic talking face: face, scene, motion style and voice (stage ⓪).

An :class:`Identity` is a frozen, JSON-serialisable bundle of everything that makes one synthetic
speaker look and sound like themselves: face shape, skin, eyes, brows, nose, lips, hair, accessories,
background, lighting, head-motion style and voice (F0, vocal-tract length, speaking rate).
:func:`sample_identity` draws one from a generator; the generator is seeded per identity index by
:mod:`difftalk.synth.generate`, so identity *k* is the same whatever the number of identities.

Geometric fields are in *face units* (the half-width of the face at ear level = 1) unless noted;
colours are RGB tuples of ints in [0, 255].
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

Colour = tuple[int, int, int]

HairStyle = Literal["bald", "short", "long", "fringe", "bun", "curly", "side_part"]
HAIR_STYLES: tuple[HairStyle, ...] = ("bald", "short", "long", "fringe", "bun", "curly", "side_part")
BrowShape = Literal["straight", "arched", "angled"]
BROW_SHAPES: tuple[BrowShape, ...] = ("straight", "arched", "angled")
Glasses = Literal["none", "round", "square"]
FacialHair = Literal["none", "stubble", "moustache", "goatee", "full"]
Background = Literal["solid", "vertical", "diagonal", "radial", "stripes", "dots"]
BACKGROUNDS: tuple[Background, ...] = ("solid", "vertical", "diagonal", "radial", "stripes", "dots")
MotionStyle = Literal["calm", "nodding", "lively"]
MOTION_STYLES: tuple[MotionStyle, ...] = ("calm", "nodding", "lively")

_SKIN_TONES: tuple[Colour, ...] = (
    (255, 224, 196),
    (241, 194, 160),
    (224, 172, 130),
    (198, 142, 102),
    (160, 110, 75),
    (120, 80, 55),
    (92, 60, 42),
)
_HAIR_COLOURS: tuple[Colour, ...] = (
    (30, 24, 22),
    (70, 45, 30),
    (120, 80, 45),
    (185, 140, 80),
    (225, 195, 130),
    (150, 60, 30),
    (160, 160, 165),
    (60, 60, 120),
)
_IRIS_COLOURS: tuple[Colour, ...] = (
    (70, 45, 25),
    (110, 70, 35),
    (60, 110, 160),
    (80, 130, 80),
    (120, 120, 130),
    (40, 30, 25),
)


@dataclass(frozen=True)
class Identity:
    """All parameters of one synthetic speaker. Geometry in face units, colours RGB 0-255."""

    # --- face shape ---
    face_scale: float
    """Face half-width at ear level as a fraction of the frame size (head ≈ 50-65 % of the height)."""
    face_height: float
    """Distance eye line → chin (mouth closed) in face units."""
    forehead_height: float
    """Distance eye line → top of the skull in face units."""
    jaw_roundness: float
    """0 = square, angular jaw; 1 = round, narrow chin."""
    chin_width: float
    """Relative width of the chin (0 = pointed, 1 = broad)."""
    skin: Colour
    cheek_blush: float
    """Strength of the cheek blush, 0-1."""
    # --- eyes and brows ---
    eye_spacing: float
    """Horizontal distance of each eye centre from the face midline."""
    eye_width: float
    """Half-width of an eye opening."""
    eye_height: float
    """Opening of the upper lid above the eye's corner line (lower lid ≈ 45 % of it)."""
    eye_tilt: float
    """Outer-corner lift in face units (positive = outer corners higher)."""
    iris: Colour
    brow_shape: BrowShape
    brow_colour: Colour
    brow_thickness: float
    brow_height: float
    """Height of the brow above the eye line."""
    # --- nose and mouth ---
    nose_length: float
    """Eye line → nose tip."""
    nose_width: float
    """Half-width of the nostrils."""
    mouth_width: float
    """Half-width of the closed mouth."""
    upper_lip: float
    """Upper-lip thickness."""
    lower_lip: float
    """Lower-lip thickness."""
    lip_colour: Colour
    # --- hair and accessories ---
    hair_style: HairStyle
    hair_colour: Colour
    glasses: Glasses
    glasses_colour: Colour
    earrings: bool
    earring_colour: Colour
    facial_hair: FacialHair
    shirt_colour: Colour
    # --- scene ---
    background: Background
    background_colours: tuple[Colour, Colour]
    light_angle: float
    """Direction the key light comes from, radians in the image plane (0 = from the right)."""
    light_strength: float
    """Contrast of the lit and shaded sides, 0-0.35."""
    # --- motion ---
    motion_style: MotionStyle
    motion_amplitude: float
    """Multiplier on the motion style's head-motion amplitudes (≈ 0.6-1.4)."""
    blink_interval: float
    """Mean seconds between blinks."""
    # --- voice ---
    f0_hz: float
    """Mean fundamental frequency of the voice (85-255 Hz)."""
    formant_scale: float
    """Formant frequency multiplier (inverse vocal-tract length; ≈ 0.88-1.22)."""
    speaking_rate: float
    """Syllables per second while speaking (pauses excluded)."""
    intonation: float
    """Depth of the F0 contour, as a fraction of F0."""
    breathiness: float
    """Aspiration noise mixed into voiced sound, 0-1."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (colour tuples become lists, as ``json`` would read them back)."""

        def plain(value: Any) -> Any:
            return [plain(v) for v in value] if isinstance(value, tuple) else value

        return {key: plain(value) for key, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Identity:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: unknown or missing keys.
        """
        names = {field.name for field in dataclasses.fields(cls)}
        unknown, missing = set(data) - names, names - set(data)
        if unknown or missing:
            raise ValueError(f"identity keys do not match: unknown {sorted(unknown)}, missing {sorted(missing)}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key == "background_colours":
                values[key] = tuple(tuple(int(c) for c in colour) for colour in value)
            elif isinstance(value, list):
                values[key] = tuple(int(c) for c in value)
            else:
                values[key] = value
        return cls(**values)


def _colour(rgb: np.ndarray) -> Colour:
    clipped = np.clip(np.round(rgb), 0, 255).astype(int)
    return (int(clipped[0]), int(clipped[1]), int(clipped[2]))


def _jitter(generator: np.random.Generator, colour: Colour, amount: float) -> Colour:
    return _colour(np.asarray(colour, dtype=float) + generator.normal(0.0, amount, size=3))


def _pick(generator: np.random.Generator, options: tuple[Any, ...], weights: list[float] | None = None) -> Any:
    probabilities = None if weights is None else np.asarray(weights) / np.sum(weights)
    return options[int(generator.choice(len(options), p=probabilities))]


def _background_colours(generator: np.random.Generator) -> tuple[Colour, Colour]:
    hue = generator.uniform(0, 360)
    saturation = generator.uniform(0.1, 0.6)
    value = generator.uniform(0.35, 0.95)
    first = _hsv_to_rgb(hue, saturation, value)
    hue2 = (hue + generator.uniform(-60, 60)) % 360
    value2 = float(np.clip(value + generator.choice([-1, 1]) * generator.uniform(0.15, 0.35), 0.15, 1.0))
    second = _hsv_to_rgb(hue2, saturation * generator.uniform(0.5, 1.2), value2)
    return first, second


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> Colour:
    """HSV (degrees, 0-1, 0-1) → RGB 0-255."""
    chroma = value * min(saturation, 1.0)
    x = chroma * (1 - abs((hue / 60.0) % 2 - 1))
    sector = int(hue // 60) % 6
    r, g, b = [(chroma, x, 0), (x, chroma, 0), (0, chroma, x), (0, x, chroma), (x, 0, chroma), (chroma, 0, x)][sector]
    m = value - chroma
    return _colour(np.array([r + m, g + m, b + m]) * 255)


def sample_identity(generator: np.random.Generator) -> Identity:
    """Draw one random identity.

    Args:
        generator: the source of randomness; the same generator state gives the same identity.

    Returns:
        A frozen :class:`Identity`.
    """
    g = generator
    skin = _jitter(g, _pick(g, _SKIN_TONES), 6.0)
    hair_colour = _jitter(g, _pick(g, _HAIR_COLOURS, [1.5, 1.5, 1.2, 1.0, 0.8, 0.8, 0.8, 0.4]), 8.0)
    # A lower voice tends to come with a longer vocal tract (lower formants).
    voice_pitch = g.uniform(0.0, 1.0)
    f0 = float(85.0 * (255.0 / 85.0) ** voice_pitch)
    formant_scale = float(np.clip(0.9 + 0.28 * voice_pitch + g.normal(0, 0.04), 0.86, 1.24))
    hair_style: HairStyle = _pick(g, HAIR_STYLES, [0.8, 1.4, 1.4, 1.2, 0.8, 1.0, 1.2])
    facial_hair: FacialHair = _pick(
        g, ("none", "stubble", "moustache", "goatee", "full"), [1.0 + 3.0 * voice_pitch, 0.6, 0.5, 0.5, 0.6]
    )
    lip_base = np.array([190.0, 95.0, 95.0]) * g.uniform(0.75, 1.05) + g.normal(0, 8, 3)
    lip_colour = _colour(0.55 * lip_base + 0.45 * np.asarray(skin, dtype=float) * np.array([0.95, 0.7, 0.7]))
    glasses: Glasses = _pick(g, ("none", "round", "square"), [4.5, 1.0, 1.0])
    brow_colour = _colour(np.asarray(hair_colour, dtype=float) * g.uniform(0.6, 0.9))
    return Identity(
        face_scale=float(g.uniform(0.18, 0.215)),
        face_height=float(g.uniform(1.35, 1.6)),
        forehead_height=float(g.uniform(1.15, 1.35)),
        jaw_roundness=float(g.uniform(0.0, 1.0)),
        chin_width=float(g.uniform(0.0, 1.0)),
        skin=skin,
        cheek_blush=float(g.uniform(0.0, 0.6)),
        eye_spacing=float(g.uniform(0.38, 0.46)),
        eye_width=float(g.uniform(0.19, 0.24)),
        eye_height=float(g.uniform(0.085, 0.12)),
        eye_tilt=float(g.uniform(-0.02, 0.04)),
        iris=_jitter(g, _pick(g, _IRIS_COLOURS), 10.0),
        brow_shape=_pick(g, BROW_SHAPES),
        brow_colour=brow_colour,
        brow_thickness=float(g.uniform(0.04, 0.085)),
        brow_height=float(g.uniform(0.23, 0.32)),
        nose_length=float(g.uniform(0.5, 0.62)),
        nose_width=float(g.uniform(0.13, 0.2)),
        mouth_width=float(g.uniform(0.38, 0.48)),
        upper_lip=float(g.uniform(0.06, 0.1)),
        lower_lip=float(g.uniform(0.08, 0.13)),
        lip_colour=lip_colour,
        hair_style=hair_style,
        hair_colour=hair_colour,
        glasses=glasses,
        glasses_colour=_pick(g, ((20, 20, 20), (120, 70, 30), (170, 170, 180), (150, 30, 40))),
        earrings=bool(g.uniform() < 0.3),
        earring_colour=_pick(g, ((230, 190, 60), (200, 200, 210), (200, 40, 60))),
        facial_hair=facial_hair,
        shirt_colour=_hsv_to_rgb(g.uniform(0, 360), g.uniform(0.2, 0.8), g.uniform(0.25, 0.85)),
        background=_pick(g, BACKGROUNDS),
        background_colours=_background_colours(g),
        light_angle=float(g.uniform(-np.pi, np.pi)),
        light_strength=float(g.uniform(0.05, 0.3)),
        motion_style=_pick(g, MOTION_STYLES),
        motion_amplitude=float(g.uniform(0.6, 1.4)),
        blink_interval=float(g.uniform(2.0, 5.0)),
        f0_hz=f0,
        formant_scale=formant_scale,
        speaking_rate=float(g.uniform(3.2, 5.2)),
        intonation=float(g.uniform(0.05, 0.18)),
        breathiness=float(g.uniform(0.02, 0.25)),
    )
