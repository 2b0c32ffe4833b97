"""A frame strip of one clip across results folders: ground truth on top, then one row per folder.

    python scripts/results_strip.py docs/recipe_strip.png --data data/synth128 --clip id0015_c00 \
        --frames 18:40:3 runs/paper_tables/results/full_steps-3000_s2_nall_ddim20_self \
        runs/paper_tables/results/recipe_steps-3000_s2_nall_ddim20_self

Each cell is the dataset's face crop of that output frame (the clip's crop box), so rows line up pixel
for pixel with the ground truth. ``--mouth`` keeps only the lower half of each crop.
"""

from __future__ import annotations

import argparse
import json
import logging
from itertools import islice
from pathlib import Path

import numpy as np

from difftalk.data.clips import open_clips
from difftalk.io.image import save_image_grid
from difftalk.io.video import iter_frames
from difftalk.preprocess.crop import crop_image

logger = logging.getLogger("results_strip")


def _row(frames: list[np.ndarray], indices: list[int], boxes: np.ndarray, size: int, mouth: bool) -> list[np.ndarray]:
    crops = [crop_image(frames[i], boxes[i], size) for i in indices]
    return [c[size // 2 :] if mouth else c for c in crops]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="PNG to write")
    parser.add_argument("results", nargs="+", type=Path, help="results folders (difftalk benchmark)")
    parser.add_argument("--data", type=Path, required=True, help="the prepared dataset the results were made from")
    parser.add_argument("--clip", required=True, help="clip name, e.g. id0015_c00")
    parser.add_argument("--frames", default="0:24:3", help="start:stop:step of output frames")
    parser.add_argument("--mouth", action="store_true", help="only the lower half of each crop")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    clip = {c.name: c for c in open_clips(args.data, "all")}[args.clip]
    start, stop, step = (int(v) for v in args.frames.split(":"))
    indices = list(range(start, stop, step))
    size = clip.crop_size
    truth = [clip.read_frame(i) for i in indices]
    rows = [[t[size // 2 :] if args.mouth else t for t in truth]]
    for folder in args.results:
        entry = next(e for e in json.loads((folder / "results.json").read_text())["clips"] if e["name"] == args.clip)
        frames = list(islice(iter_frames(folder / entry["video"], 25.0), stop))
        offset = int(entry.get("start_frame", 0))
        boxes = clip.boxes[offset:]
        rows.append(_row(frames, indices, boxes, size, args.mouth))
    logger.info("strip → %s", save_image_grid(args.output, rows))


if __name__ == "__main__":
    main()
