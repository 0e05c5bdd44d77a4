"""What the training loops share (learned priors, decoders): atomic, resumable checkpoints
with metadata checks and random-state capture (:mod:`.checkpoint`)."""

from pyinvert.training.checkpoint import (
    data_hash,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state", "data_hash"]
