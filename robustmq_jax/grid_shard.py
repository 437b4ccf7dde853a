"""`config.grid_shard='I/N'`: one job's deterministic share of the grid.

A SLURM job array or N TPU slices split one study into N independent jobs,
each with its own workdir; `scripts/make_report.py --workdir=A --workdir=B`
merges them into one report. Every job lists the whole grid (the runner does
so before computing anything) and keeps the units assigned to its shard.

The unit of assignment is a (model, precision, suite) group, not a cell:
cells of one group share work a job does once (loading and quantizing the
model, compiling the suite's programs, decoding the systematic suite's JPEGs,
the transfer adversarials crafted on the float model, every severity of a
corruption in one pass), so splitting a group would repeat that work on
several jobs. Groups are assigned by greedy longest-processing-time (largest
expected cost first, each to the least loaded shard), which puts every shard
within the largest group's cost of the best split. With more shards than
groups some shards get nothing (they still write an empty report).

Expected cost, in forward-equivalents of the model (`cell_cost`): images x
passes per image (`passes`: forwards + GRAD_COST x value-and-grads, plus the
corruption generation or resize on device) x the model's multiply-adds
(`MODEL_GMACS`) x a quantized-precision factor. It only has to rank units
within one grid; `benchmarks/projection.py` uses the same pass counts with
measured per-model rates.
"""

import dataclasses
from typing import Any, Hashable, Mapping, Sequence

from robustmq_jax.errors import invalid

ALLOWED = "'I/N' with integers 1 <= I <= N (e.g. 2/8), or '' for the whole grid"

# A value-and-grad pass costs about this many forwards (backward ~ 2x).
GRAD_COST = 3.0
# A quantized model's fake-quant forward, relative to the float one.
QUANT_FACTOR = 1.5
# Corruption generation and the systematic suite's on-device resizes, per
# image, in forwards of a small model (they do not scale with the model).
CORRUPTION_COST = 1.0
RESIZE_COST = 0.2
# Multiply-accumulates per image (G), at the model's own input size; a name
# not listed counts as 1 GMAC scaled by its input area.
MODEL_GMACS: Mapping[str, float] = {
    'resnet18': 1.82, 'resnet50': 4.11, 'regnetx_600mf': 0.60,
    'regnetx_800mf': 0.80, 'mobilenet_v2': 0.30,
    'vit_tiny_patch16_224': 1.26, 'vit_small_patch16_224': 4.61,
    'vit_base_patch16_224': 17.6,
    'resnet18_cifar': 0.56, 'resnet20_cifar': 0.041, 'regnetx_cifar': 0.02,
    'mobilenet_v2_cifar': 0.01, 'vit_tiny_patch4_32': 0.02,
}
# Calibration / loading of a quantized model, in images through it.
QUANT_SETUP_IMAGES = 256


def parse(text: Any, field: str = 'config.grid_shard'
          ) -> tuple[int, int] | None:
  """'I/N' -> (I, N) (1-based I); '' -> None; else UserError naming `field`."""
  if text is None or text == '':
    return None
  if not isinstance(text, str):
    raise invalid(field, text, ALLOWED)
  left, sep, right = text.strip().partition('/')
  try:
    index, count = int(left), int(right)
  except ValueError:
    raise invalid(field, text, ALLOWED) from None
  if not sep or count < 1 or not 1 <= index <= count:
    raise invalid(field, text, ALLOWED)
  return index, count


@dataclasses.dataclass(frozen=True)
class Passes:
  """Work per image of one cell: forwards, value-and-grads, other."""
  forward: float
  grad: float
  other: float = 0.0  # forward-equivalents of a small model

  def cost(self, gmacs: float) -> float:
    return (self.forward + GRAD_COST * self.grad) * gmacs + self.other


def passes(suite: str, noise: str, params: Mapping[str, Any], *,
           quantized: bool) -> Passes:
  """Forward and value-and-grad passes per image of a cell, worst case.

  Worst case: attacks count every step of every restart (early stopping on
  already-fooled examples only makes them cheaper). The quantized clean cell
  also runs the real-integer model; a quantized adversarial cell also scores
  the transfer adversarials (crafted once on the float model per job).
  """
  steps = int(params.get('steps') or 0)
  restarts = int(params.get('restarts') or 1)
  if suite == 'clean':
    return Passes(2.0 if quantized else 1.0, 0.0)
  if suite == 'corruption':
    return Passes(1.0, 0.0, 0.0 if noise == 'none' else CORRUPTION_COST)
  if suite == 'systematic':
    return Passes(1.0, 0.0, RESIZE_COST)
  if suite == 'adversarial':
    score = 2.0 if quantized else 1.0  # Final forward (+ transfer scoring).
    if noise == 'fgsm':
      return Passes(score, 1.0)
    if noise in ('pgd_linf', 'pgd_l2', 'pgd_l1'):
      return Passes(score + restarts, steps * restarts)
    if noise == 'apgd_ce':
      return Passes(score + 1, steps)
    if noise == 'square':
      return Passes(score + int(params.get('queries') or 0), 0.0)
    if noise == 'autoattack':
      # APGD-CE, APGD-T and FAB-T over each target class, then Square.
      targets = int(params.get('targets') or 9)
      queries = int(params.get('queries') or 0)
      return Passes(score + queries, steps * (1 + 2 * targets))
    return Passes(score, steps or 1)
  # Other suites (amplification, ...): a forward per step, at least one.
  return Passes(1.0, float(steps))


def model_gmacs(model: str, image_size: int = 224) -> float:
  return MODEL_GMACS.get(model, (image_size / 224) ** 2)


def cell_cost(model: str, precision: str, suite: str, noise: str,
              params: Mapping[str, Any], n: int, *,
              image_size: int = 224) -> float:
  """Expected cost of one cell (relative units; see the module docstring)."""
  quantized = not precision.startswith('fp32')
  gmacs = model_gmacs(model, image_size) * (QUANT_FACTOR if quantized else 1)
  return n * passes(suite, noise, params, quantized=quantized).cost(gmacs)


def group_setup_cost(model: str, precision: str, image_size: int = 224
                     ) -> float:
  """What a job pays once per group it runs: loading and calibrating."""
  if precision.startswith('fp32'):
    return 0.0
  return QUANT_SETUP_IMAGES * model_gmacs(model, image_size)


def assign(costs: Sequence[float], count: int) -> list[int]:
  """Greedy longest-processing-time: the shard (0-based) of every unit.

  Largest cost first (ties in input order), each to the least loaded shard
  (ties to the lowest index); deterministic for a given list.
  """
  order = sorted(range(len(costs)), key=lambda i: (-costs[i], i))
  load = [0.0] * count
  shard = [0] * len(costs)
  for i in order:
    s = min(range(count), key=lambda j: (load[j], j))
    shard[i] = s
    load[s] += costs[i]
  return shard


def select(cells: Sequence[tuple[Hashable, float]], index: int, count: int,
           setup: Mapping[Hashable, float] | None = None) -> list[bool]:
  """Which cells shard `index` (1-based) of `count` runs.

  Args:
    cells: (group, cost) of every cell of the grid, in grid order; the
      group is the unit kept together ((model, precision, suite)).
    index: this job's shard, 1..count.
    count: number of shards.
    setup: optional extra cost per group (paid once by its shard).

  Returns:
    One bool per cell.
  """
  groups: dict[Hashable, float] = {}
  for group, cost in cells:
    groups[group] = groups.get(group, (setup or {}).get(group, 0.0)) + cost
  names = list(groups)
  shard = dict(zip(names, assign([groups[g] for g in names], count)))
  return [shard[group] == index - 1 for group, _ in cells]
