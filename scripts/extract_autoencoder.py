"""Write the frozen autoencoder inside a DiffTalk checkpoint as a standalone autoencoder checkpoint.

    python scripts/extract_autoencoder.py src/difftalk/assets/demo_model runs/demo_autoencoder

A fresh clone has the shipped demo model but not the run folder of the autoencoder it was trained with;
this recovers that autoencoder (as stored in the checkpoint, fp16 in the demo model) so that new
diffusion runs (``--set train.autoencoder=...``) and the paper tables can use the same latent space.
"""

from __future__ import annotations

import argparse
import logging

import torch

from difftalk.models.difftalk import DiffTalkModel

logger = logging.getLogger("extract_autoencoder")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a DiffTalk checkpoint folder (config.json + weights.safetensors)")
    parser.add_argument("out", help="where to write the autoencoder checkpoint folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = DiffTalkModel.from_pretrained(args.checkpoint, dtype=torch.float32)
    model.autoencoder.save_pretrained(args.out)
    logger.info(
        "autoencoder of %s → %s (latent scale of that model: %.4f)",
        args.checkpoint,
        args.out,
        model.config.latent_scale,
    )


if __name__ == "__main__":
    main()
