"""Training: strict configs, data (view pairs + real frames), loop, checkpoints, distributed."""
