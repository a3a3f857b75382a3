"""Training: the jitted step, the loop, optimiser, checkpoints and the device mesh."""
