"""The layer-by-layer selection of LAAQ on candidate tables (pure numpy).

Each weight layer l offers candidate settings c with a Lipschitz constant
L_l(c) and an output error e_l(c); with E_0 the input perturbation size,

  E_l = L_l(c_l) * E_{l-1} + e_l(c_l).

E_l is non-decreasing in E_{l-1}, so minimising each E_l in forward order
(`select_chain`) minimises E_L over all combinations; `brute_force` checks it
exhaustively (see `robustmq_jax.defenses.laaq` for the derivation).
"""

import dataclasses
import itertools
from typing import Sequence

import numpy as np


@dataclasses.dataclass
class LayerTable:
  """The candidates of one layer.

  Attributes:
    path: Role path.
    w_fracs: [nw] kernel fractions ([1.0] when the kernel stays float).
    a_fracs: [na] input fractions ([1.0] when the input stays float).
    lip: [nw] Lipschitz constant of the quantized (BN-folded) kernel.
    err: [nw, na] RMS output error.
  """
  path: str
  w_fracs: np.ndarray
  a_fracs: np.ndarray
  lip: np.ndarray
  err: np.ndarray

  def objective(self, e_in: float) -> np.ndarray:
    """[nw, na]: the layer's output perturbation bound for input E_{l-1}."""
    return self.lip[:, None] * e_in + self.err


def select_chain(tables: Sequence[LayerTable], e0: float
                 ) -> tuple[list[tuple[int, int]], list[float]]:
  """The greedy layer-by-layer selection under the 'bound' propagation.

  Returns:
    (per layer (w index, a index), per layer E_l).
  """
  e, picks, es = float(e0), [], []
  for t in tables:
    total = t.objective(e)
    iw, ia = np.unravel_index(int(np.argmin(total)), total.shape)
    picks.append((int(iw), int(ia)))
    e = float(total[iw, ia])
    es.append(e)
  return picks, es


def chain_bound(tables: Sequence[LayerTable], e0: float,
                picks: Sequence[tuple[int, int]]) -> float:
  """E_L of the recursion for given choices."""
  e = float(e0)
  for t, (iw, ia) in zip(tables, picks):
    e = float(t.lip[iw] * e + t.err[iw, ia])
  return e


def brute_force(tables: Sequence[LayerTable], e0: float
                ) -> tuple[list[tuple[int, int]], float]:
  """Exhaustive minimisation of `chain_bound` (for tests; exponential)."""
  options = [list(itertools.product(range(len(t.w_fracs)),
                                    range(len(t.a_fracs)))) for t in tables]
  best, best_e = None, np.inf
  for picks in itertools.product(*options):
    e = chain_bound(tables, e0, picks)
    if e < best_e:
      best, best_e = list(picks), e
  return best, best_e
