"""Checkpoints: our format (save/load)."""

from robustmq_jax.checkpoints.io import load
from robustmq_jax.checkpoints.io import read_spec
from robustmq_jax.checkpoints.io import save
