"""Translation networks, losses and the training step (MUNIT-style with neural textures)."""
