"""The one compatibility shim between aqtp 0.9.0 and recent JAX.

aqtp 0.9.0 (the last release) calls ``jax.core.get_aval`` in
``aqt/jax/v2/flax/aqt_flax_dg_core.py`` when a quantized dot_general with
frozen (SERVE / CONVERT) variables is differentiated. JAX 0.8.2 deprecated
and 0.10.0 removed it (``jax.typeof`` is the replacement; AQT's main branch
switched in commit 8b70eb3, unreleased). Without the shim, the gradient of a
served model raises ``AttributeError``.

`install()` gives that one AQT module a view of ``jax`` whose ``core`` has
``get_aval = jax.typeof``; the global ``jax.core`` is left untouched. It is a
no-op on JAX versions that still have ``jax.core.get_aval`` and on AQT
versions that no longer call it. Other AQT breakages on JAX 0.10 (the
delayed-scaling calibration's ``mutable_array``) are avoided: we do not use
that calibration.
"""

import types

import jax

_installed = False


class _CoreWithGetAval(types.SimpleNamespace):
  """`jax.core` plus the removed `get_aval`."""

  def __getattr__(self, name):
    return getattr(jax.core, name)


class _JaxView(types.SimpleNamespace):
  """The `jax` module as seen by aqt_flax_dg_core."""

  def __getattr__(self, name):
    return getattr(jax, name)


def needed() -> bool:
  """True when this JAX lacks ``jax.core.get_aval``."""
  return not hasattr(jax.core, 'get_aval')


def install() -> None:
  """Patches aqt_flax_dg_core's view of jax (idempotent)."""
  global _installed
  if _installed:
    return
  from aqt.jax.v2.flax import aqt_flax_dg_core  # pylint: disable=g-import-not-at-top
  if needed() and aqt_flax_dg_core.jax is jax:
    aqt_flax_dg_core.jax = _JaxView(core=_CoreWithGetAval(
        get_aval=jax.typeof))
  _installed = True
