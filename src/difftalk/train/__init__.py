"""Training: the diffusion model (``difftalk train``) and the autoencoder (``difftalk train-autoencoder``).

Both run on Lightning Fabric (CPU, one GPU, multi-GPU DDP, multi-node), write a run folder (resolved
config, git SHA, metrics.csv, TensorBoard, PNG samples), checkpoint atomically every N steps and on
SIGTERM, and resume exactly (model, EMA, optimiser, step, RNG, data position).
"""
