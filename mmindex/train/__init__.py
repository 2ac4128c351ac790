"""Training: contrastive fine-tuning (loop, losses, tower locking, checkpoints, the Ray
backend) and the projector stages."""
