"""The suite contract: how noise families plug into the runner.

A suite enumerates its cells (one noise setting each) for a model, then
evaluates the cells the runner has not finished yet and yields one metrics
dict per cell. The runner owns the results store: it skips finished cells,
adds the full key to every row and writes it as soon as it is yielded, so an
interrupted run resumes where it stopped.

To add a suite: subclass `Suite`, give it a unique `name`, and decorate it with
`@register`; import its module in `robustmq_jax/suites/__init__.py`. The
registry holds classes: every run instantiates its own suites, so two runs in
one process share no cache. Its
config lives in `config.<name>` (a ConfigDict; may be absent) and it validates
it in `validate`.
"""

import abc
import dataclasses
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

import jax
import ml_collections
import numpy as np

from robustmq_jax.data.base import Dataset
from robustmq_jax.errors import invalid
from robustmq_jax.evaluation.evaluator import Evaluator

# apply(variables, images) -> logits; images float32 NHWC in [0, 1].
ApplyFn = Callable[[Any, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Cell:
  """One noise setting of a suite.

  Attributes:
    noise: the noise name: 'none', 'fgsm', 'pgd_linf', 'gaussian_noise',
      'pil_bilinear', ...
    params: JSON-serialisable parameters (eps, severity, decoder, ...).
    n: number of examples the cell will use, when the suite evaluates a
      subset; None means the whole split (`config.data.num_examples` or all).
      It is part of the row key, so changing the subset size is a new cell.
  """
  noise: str
  params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  n: int | None = None


@dataclasses.dataclass
class ModelUnderTest:
  """A model at one precision, as the suites see it.

  Attributes:
    name: model name (`robustmq_jax.models.list_models()`).
    precision: 'fp32', 'w8a8', 'w4a16', ...
    apply: the evaluated forward (fake-quant for quantized models); may be
      a `jax.jit` wrapper (traced once per input shape for every suite), so
      neither differentiate it nor intercept its module calls.
    variables: its variables.
    grad_apply: the plain forward, for gradients (straight-through twin)
      and layer interception; same signature and forward numerics as
      `apply`.
    serve_apply: real integer forward (AQT SERVE), or None.
    serve_variables: variables for `serve_apply`.
    float_model: the fp32 model of the same architecture (transfer source;
      None for the fp32 model itself).
    image_size: input side.
    method: quantization method ('ptq', 'dorefa', ...) or 'float'.
  """
  name: str
  precision: str
  apply: ApplyFn
  variables: Any
  grad_apply: ApplyFn | None = None
  serve_apply: ApplyFn | None = None
  serve_variables: Any = None
  float_model: 'ModelUnderTest | None' = None
  image_size: int = 32
  method: str = 'float'

  def __post_init__(self):
    if self.grad_apply is None:
      self.grad_apply = self.apply

  def logits_fn(self, variables=None, *, grad: bool = False):
    """A function of images only, for attacks: ``images -> logits``."""
    v = self.variables if variables is None else variables
    f = self.grad_apply if grad else self.apply
    return lambda x: f(v, x)


@dataclasses.dataclass
class SuiteContext:
  """Everything a suite needs besides the model.

  Attributes:
    config: the whole run config (a suite reads `config.<suite name>`).
    dataset: the evaluation split.
    evaluator: the sharded evaluator (its `mesh` is the one mesh).
    batch_size: largest global batch (`data.iter_batches` evens them out).
    seed: run seed; suites derive keys from it and example ids.
    cache_dir: a folder for the suite's cached artefacts (process 0 writes).
    num_examples: examples of the split to use (`config.data.num_examples`,
      or the whole split); the default ids are 0..num_examples-1.
  """
  config: ml_collections.ConfigDict
  dataset: Dataset
  evaluator: Evaluator
  batch_size: int
  seed: int
  cache_dir: str
  num_examples: int = 0

  def __post_init__(self):
    if not self.num_examples:
      self.num_examples = self.dataset.num_examples

  def subset(self, n: int | None) -> 'np.ndarray':
    """A fixed, seeded subset of n example ids (sorted), or all of them."""
    ids = np.arange(self.num_examples)
    if not n or n >= len(ids):
      return ids
    rng = np.random.default_rng(self.seed)
    return np.sort(rng.choice(ids, size=n, replace=False))

  @property
  def mesh(self):
    return self.evaluator.mesh

  def batches(self, *, ids=None, load=None):
    """This process's padded batches (see `robustmq_jax.data.iter_batches`)."""
    from robustmq_jax.data.base import iter_batches  # pylint: disable=g-import-not-at-top
    if ids is None:
      ids = np.arange(self.num_examples)
    return iter_batches(
        self.dataset, self.batch_size // jax.process_count(), ids=ids,
        process_index=jax.process_index(), process_count=jax.process_count(),
        load=load)


class Suite(abc.ABC):
  """A family of noise settings evaluated on a model."""

  name: ClassVar[str]

  def validate(self, config: ml_collections.ConfigDict) -> None:
    """Raises `robustmq_jax.errors.UserError` on a bad `config.<name>`."""
    del config

  @abc.abstractmethod
  def cells(self, ctx: SuiteContext, model: ModelUnderTest) -> Sequence[Cell]:
    """All cells of this suite for `model`, in a stable order.

    Must depend only on the config and the model's metadata (name, precision,
    method, image_size, whether float_model is set): the runner calls it on a
    stub whose `apply` is None to find finished cells before loading anything.
    """

  @abc.abstractmethod
  def run(self, ctx: SuiteContext, model: ModelUnderTest,
          cells: Sequence[Cell]) -> Iterator[tuple[Cell, dict[str, Any]]]:
    """Evaluates `cells` (a subset of `cells()`), yielding (cell, metrics).

    Metrics must include 'accuracy' (a fraction) and 'n' (examples used);
    any other JSON-serialisable entries are stored in the row too (e.g.
    'accuracy_int8', 'zero_grad_fraction').
    """

  def release(self, *, model_done: bool = False) -> None:
    """Drops what belongs to the model/precision just finished.

    The runner calls it before the next precision whose model functions
    differ (precisions that differ only in bit widths share theirs, and so
    their compiled programs: `quant.QuantRequest.programs`), and with
    `model_done` before the next model, so compiled programs and the
    weights their closures hold do not pile up over a long grid. The
    default empties
    `self._fns` (the per-example functions, each the key of a compiled
    step); data caches have their own stated bounds, and those tied to one
    model are dropped when `model_done`.
    """
    del model_done
    fns = getattr(self, '_fns', None)
    if isinstance(fns, dict):
      fns.clear()


_REGISTRY: dict[str, type[Suite]] = {}


def register(cls: type[Suite]) -> type[Suite]:
  """Class decorator adding a suite class to the registry."""
  _REGISTRY[cls.name] = cls
  return cls


def get_suite(name: str) -> Suite:
  """A new instance of the named suite: each run owns its suites' state."""
  if name not in _REGISTRY:
    raise invalid('config.suites', name, sorted(_REGISTRY))
  return _REGISTRY[name]()


def list_suites() -> list[str]:
  return sorted(_REGISTRY)
