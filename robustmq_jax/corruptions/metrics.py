"""Corruption metrics: CE, mCE and relative mCE (Hendrycks & Dietterich,
arXiv 1903.12261), with AlexNet's ImageNet-C errors keyed by name.

With E(f, c, s) the top-1 error of model f on corruption c at severity s:

* CE(f, c) = sum_s E(f, c, s) / sum_s E(g, c, s) for a baseline g (AlexNet on
  ImageNet-C; elsewhere we use the float model of the same architecture).
* relative CE(f, c) = sum_s [E(f, c, s) - E_clean(f)] /
  sum_s [E(g, c, s) - E_clean(g)].
* mCE / relative mCE: their means over the 15 benchmark corruptions only.
* Mean corruption accuracy (RobustMQ's "natural robustness"): the mean
  top-1 accuracy over the evaluated (corruption, severity) sets.
"""

import math
from typing import Mapping, Sequence

BENCHMARK = ('gaussian_noise', 'shot_noise', 'impulse_noise', 'defocus_blur',
             'glass_blur', 'motion_blur', 'zoom_blur', 'snow', 'frost', 'fog',
             'brightness', 'contrast', 'elastic_transform', 'pixelate',
             'jpeg_compression')

# AlexNet top-1 errors on ImageNet-C, severities 1..5: hendrycks/robustness
# README as of PR #20 (commit 76d9393, "Add AlexNet errors on ImageNet-C";
# removed from the README in commit 5aa129e). Keyed by name, never by
# position: the non-monotone rows (snow, elastic, saturate) are genuine.
ALEXNET_ERRORS: dict[str, tuple[float, ...]] = {
    'gaussian_noise': (0.69528, 0.82542, 0.93554, 0.98138, 0.99452),
    'shot_noise': (0.71224, 0.85108, 0.93574, 0.98182, 0.99146),
    'impulse_noise': (0.78374, 0.89808, 0.94870, 0.98720, 0.99548),
    'defocus_blur': (0.65624, 0.73202, 0.85036, 0.91364, 0.94714),
    'glass_blur': (0.64308, 0.75054, 0.88806, 0.91622, 0.93344),
    'motion_blur': (0.58430, 0.70048, 0.82108, 0.89750, 0.92638),
    'zoom_blur': (0.70008, 0.76992, 0.80784, 0.84198, 0.87198),
    'snow': (0.71726, 0.88392, 0.86468, 0.91870, 0.94952),
    'frost': (0.61390, 0.79734, 0.88790, 0.89942, 0.93430),
    'fog': (0.67474, 0.76050, 0.84378, 0.87260, 0.94500),
    'brightness': (0.45140, 0.48502, 0.54048, 0.62166, 0.72440),
    'contrast': (0.64548, 0.76150, 0.88874, 0.97760, 0.99270),
    'elastic_transform': (0.52596, 0.70116, 0.55686, 0.64076, 0.80554),
    'pixelate': (0.52218, 0.54620, 0.73728, 0.87092, 0.91262),
    'jpeg_compression': (0.51002, 0.54718, 0.57294, 0.65458, 0.74778),
    'speckle_noise': (0.66192, 0.74440, 0.90246, 0.94548, 0.97268),
    'gaussian_blur': (0.54732, 0.70444, 0.82574, 0.89864, 0.95940),
    'spatter': (0.47196, 0.62194, 0.75052, 0.84132, 0.90182),
    'saturate': (0.59342, 0.65514, 0.51174, 0.70834, 0.82260),
}
# AlexNet's clean top-1 error as used for relative mCE in public code (the
# paper's table reads 43.5%).
ALEXNET_CLEAN_ERROR = 0.4345

# errors: {severity (1..5): top-1 error}.
Errors = Mapping[int, float]


def alexnet_errors(corruption: str) -> dict[int, float]:
  """AlexNet's errors {severity: error} for a corruption name."""
  return dict(enumerate(ALEXNET_ERRORS[corruption], start=1))


def corruption_error(errors: Errors, baseline: Errors) -> float:
  """CE over the severities both have (nan if none or a zero baseline)."""
  sev = sorted(set(errors) & set(baseline))
  den = sum(baseline[s] for s in sev)
  if not sev or den <= 0:
    return math.nan
  return sum(errors[s] for s in sev) / den


def relative_corruption_error(errors: Errors, clean_error: float,
                              baseline: Errors,
                              baseline_clean_error: float) -> float:
  """Relative CE over the shared severities (nan on a zero denominator)."""
  sev = sorted(set(errors) & set(baseline))
  den = sum(baseline[s] - baseline_clean_error for s in sev)
  if not sev or den <= 0 or clean_error is None or math.isnan(clean_error):
    return math.nan
  return sum(errors[s] - clean_error for s in sev) / den


def mean_over_benchmark(values: Mapping[str, float],
                        names: Sequence[str] = BENCHMARK) -> float:
  """Mean over the benchmark corruptions present with a finite value.

  Undefined CEs (nan: a baseline with no error above its clean error, which
  happens for relative CE against a float model on mild corruptions) are
  left out; nan if none is left.
  """
  vals = [values[n] for n in names if n in values and not math.isnan(values[n])]
  if not vals:
    return math.nan
  return sum(vals) / len(vals)


def count_defined(values: Mapping[str, float],
                  names: Sequence[str] = BENCHMARK) -> tuple[int, int]:
  """(finite values, present values) among the benchmark corruptions."""
  present = [n for n in names if n in values]
  return sum(not math.isnan(values[n]) for n in present), len(present)


def mce(errors: Mapping[str, Errors], *,
        baseline: Mapping[str, Errors] | None = None) -> float:
  """mCE: mean CE over the benchmark corruptions in `errors`.

  Args:
    errors: {corruption: {severity: error}} of the model.
    baseline: the same for the baseline; AlexNet on ImageNet-C if None.
  """
  base = baseline if baseline is not None else {
      c: alexnet_errors(c) for c in ALEXNET_ERRORS}
  ces = {c: corruption_error(e, base[c]) for c, e in errors.items()
         if c in base}
  return mean_over_benchmark(ces)


def relative_mce(errors: Mapping[str, Errors], clean_error: float, *,
                 baseline: Mapping[str, Errors] | None = None,
                 baseline_clean_error: float | None = None) -> float:
  """Relative mCE over the benchmark corruptions (AlexNet if no baseline)."""
  if baseline is None:
    base = {c: alexnet_errors(c) for c in ALEXNET_ERRORS}
    base_clean = ALEXNET_CLEAN_ERROR
  else:
    base, base_clean = baseline, baseline_clean_error
  rces = {c: relative_corruption_error(e, clean_error, base[c], base_clean)
          for c, e in errors.items() if c in base}
  return mean_over_benchmark(rces)
