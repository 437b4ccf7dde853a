"""Checkpoints: our format (save/load) and pretrained-weight converters."""

from robustmq_jax.checkpoints.convert import ARCHS
from robustmq_jax.checkpoints.convert import convert
from robustmq_jax.checkpoints.convert import convert_file
from robustmq_jax.checkpoints.convert import FAMILIES
from robustmq_jax.checkpoints.convert import read_weights
from robustmq_jax.checkpoints.io import load
from robustmq_jax.checkpoints.io import read_spec
from robustmq_jax.checkpoints.io import save
