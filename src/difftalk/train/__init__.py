"""Training: the diffusion model, the autoencoder, the SyncNet expert and the LipGAN baseline.

Every trainer keeps its set-up and its step and runs them through one loop (``train.loop.fit``) on
Lightning Fabric (CPU, one GPU, multi-GPU DDP, multi-node): a run folder (resolved config, git SHA,
metrics.csv, TensorBoard, samples), atomic checkpoints every N steps and on SIGTERM, and exact resume
(models, optimisers, EMA, step, RNG states, data position) from one state dict.

All four are called as ``train_X(config, resume=True, progress=True)``: ``config`` names the data and
the run folder (their configs live in ``difftalk.config``), ``resume`` continues from
``<run_dir>/checkpoints/training_state.pt`` when it exists, ``progress`` shows a progress bar (rank 0).
"""
