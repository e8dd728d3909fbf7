"""Training: the loop, optimiser and schedules, checkpoints, distributed set-up."""
