"""What the shipped synthetic-data model does to a real face: the picture in the README (docs/real_face.png).

    python scripts/real_face_example.py [--checkpoint DIR] [--out outputs/real_face] [--png docs/real_face.png]

The face is scikit-image's ``astronaut`` (Eileen Collins, a NASA portrait in the public domain); the
speech is the demo's new synthetic speech. The photo is animated with the demo's settings and the
picture shows, for the photo's face crop and six output frames: the face crop (top) and the mouth
region enlarged (bottom). Needs the ``face`` extra (dlib landmarks).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from difftalk.demo import DEMO_MODEL, demo_options, render_synthetic_inputs
from difftalk.io.image import save_image_grid
from difftalk.io.video import iter_frames
from difftalk.pipeline import DiffTalkPipeline
from difftalk.preprocess.crop import crop_image

logger = logging.getLogger("real_face_example")
CELL = 192


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(DEMO_MODEL), help="model folder (default: the shipped demo model)")
    parser.add_argument("--out", default="outputs/real_face", help="folder for the photo, speech and video")
    parser.add_argument("--png", default="docs/real_face.png", help="the picture to write")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the speech")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    photo = out / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    speech = render_synthetic_inputs(out / "speech", seconds=args.seconds).speech

    pipe = DiffTalkPipeline.from_pretrained(args.checkpoint)
    options = demo_options(progress=False)
    track = pipe.set_source(photo, options)
    result = pipe.generate(speech, out / "astronaut_dubbed.mp4", options)

    box = track.boxes[0]
    size = 256
    # the mouth region of the crop: a square on the lower face, enlarged
    top, side = size * 3 // 8, size * 2 // 5
    left = (size - side) // 2

    def cells(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        crop = crop_image(image, box, size)
        face = cv2.resize(crop, (CELL, CELL), interpolation=cv2.INTER_AREA)
        mouth = cv2.resize(crop[top : top + side, left : left + side], (CELL, CELL), interpolation=cv2.INTER_CUBIC)
        return face, mouth

    picks = set(np.linspace(result.num_frames // 8, result.num_frames - 1, 6).round().astype(int).tolist())
    faces, mouths = zip(*[cells(data.astronaut())], strict=True)
    frames = [cells(frame) for index, frame in enumerate(iter_frames(result.output)) if index in picks]
    png = save_image_grid(args.png, [[faces[0], *(f for f, _ in frames)], [mouths[0], *(m for _, m in frames)]])
    logger.info("wrote %s (photo | 6 output frames; face crop above, mouth below) and %s", png, result.output)


if __name__ == "__main__":
    main()
