"""Imports torchvision / timm on CPU-only torch, or skips the test.

Under CI (`tests/ci.py`) a missing package fails instead: the reference
comparisons must run there.

torchvision 0.28.0 (the only release built for torch 2.13.0) ships CUDA-linked
C ops; on CPU torch they fail to load and its meta registrations then raise
``RuntimeError: operator torchvision::nms does not exist`` at import. timm
imports torchvision. The shim skips `torch.library.register_fake` for
torchvision ops that do not exist; the Python models still work, the C ops
(nms, roi_align) do not. Only the test harness uses this.
"""

import importlib

from robustmq_jax.testing.torch_compat import patch_register_fake
from tests import ci


def _import(name: str):
  try:
    return importlib.import_module(name)
  except ImportError:
    ci.missing(f'{name} is not installed')


def import_torch():
  """Returns torch, or skips the test."""
  return _import('torch')


def import_torchvision():
  """Returns torchvision (with the CPU shim), or skips the test."""
  import_torch()
  patch_register_fake()
  return _import('torchvision')


def import_timm():
  """Returns timm (needs torchvision; with the CPU shim), or skips the test."""
  import_torchvision()
  return _import('timm')
