"""Copy a trained DiffTalk checkpoint into a shippable one: fp16 weights, the same config and metadata.

How the demo model and its distilled student in ``src/difftalk/assets/`` were made from their run folders
(a student keeps its ``sampler``, ``sampler_steps``, ``distilled`` and ``teacher`` records)::

    python scripts/ship_model.py runs/distill_demo/checkpoints/model src/difftalk/assets/demo_student \\
        --note "difftalk distill --teacher src/difftalk/assets/demo_model --config synth_128 ..."
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from difftalk.checkpoint import read_checkpoint_meta, weights_sha256
from difftalk.models.difftalk import DiffTalkModel

logger = logging.getLogger("ship_model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="checkpoint folder (e.g. runs/NAME/checkpoints/model)")
    parser.add_argument("output", type=Path, help="folder to write")
    parser.add_argument("--fp32", action="store_true", help="keep fp32 weights (default: fp16, half the size)")
    parser.add_argument("--note", help="how the weights were trained (recorded as 'trained_with')")
    parser.add_argument(
        "--audio-guidance",
        type=float,
        help="the audio guidance generation uses by default with this model (recorded as 'audio_guidance'; needs a "
        "model trained with train.audio_dropout)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    extra = dict(read_checkpoint_meta(args.source, DiffTalkModel.KIND).get("extra", {}))
    if args.note:
        extra["trained_with"] = args.note
    if args.audio_guidance is not None:
        if args.audio_guidance != 1.0 and float(extra.get("audio_dropout", 0.0)) <= 0:
            raise SystemExit(f"{args.source} was not trained with train.audio_dropout: it cannot be audio-guided")
        extra["audio_guidance"] = args.audio_guidance
    teacher = extra.get("teacher")
    here = isinstance(teacher, dict) and Path(str(teacher.get("path", ""))).is_dir()
    if here and weights_sha256(teacher["path"]) != teacher.get("sha256"):
        raise SystemExit(f"{teacher['path']} is not the teacher this student was distilled from (sha256 differs)")
    model = DiffTalkModel.from_pretrained(args.source)
    model.save_pretrained(args.output, dtype=None if args.fp32 else torch.float16, **extra)
    size = (args.output / "weights.safetensors").stat().st_size / 2**20
    logger.info("wrote %s (%.1f MiB; extra: %s)", args.output, size, sorted(extra))


if __name__ == "__main__":
    main()
