"""Sharded evaluation: the mesh and the evaluator."""

from robustmq_jax.evaluation.evaluator import Evaluator
from robustmq_jax.evaluation.evaluator import images_to_float
from robustmq_jax.evaluation.mesh import make_mesh
from robustmq_jax.evaluation.mesh import replicate
from robustmq_jax.evaluation.mesh import to_global
