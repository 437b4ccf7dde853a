"""Training: the supervised step and loop, and the checkpointed QAT job.

  supervised     Recipe, cross_entropy, make_train_step, fit, accuracy
                 (in-memory training: sample checkpoints, the main job's
                 cached QAT, the defenses).
  train_stream   (in robustmq_jax.data) the QAT job's streaming input.
  checkpointing  orbax checkpoints of a training run (resume after a kill).
  qat_settings   the QAT job's config, validated once.
  qat_job        `run(settings, workdir)`: calibrate, train data-parallel
                 with checkpoints, export a quantized checkpoint.
  progress       the QAT job's progress line (steps, images/s, ETA).

`robustmq_jax.train` is the QAT job's command line.
"""

from robustmq_jax.training.supervised import accuracy
from robustmq_jax.training.supervised import cross_entropy
from robustmq_jax.training.supervised import fit
from robustmq_jax.training.supervised import make_train_step
from robustmq_jax.training.supervised import Penalty
from robustmq_jax.training.supervised import Perturb
from robustmq_jax.training.supervised import Recipe
from robustmq_jax.training.supervised import TrainStep

__all__ = ['Penalty', 'Perturb', 'Recipe', 'TrainStep', 'accuracy',
           'cross_entropy', 'fit', 'make_train_step']
