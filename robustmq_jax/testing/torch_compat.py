"""Importing torchvision / timm on CPU-only torch, for reference comparisons.

torchvision 0.28.0 (the only release built for torch 2.13.0) ships CUDA-linked
C ops; on CPU torch they fail to load and its meta registrations then raise
``RuntimeError: operator torchvision::nms does not exist`` at import. timm
imports torchvision. The shim skips `torch.library.register_fake` for
torchvision ops that do not exist; the Python models still work, the C ops
(nms, roi_align) do not. Tests and benchmarks use this.
"""


def patch_register_fake() -> None:
  """Makes `import torchvision` work on CPU-only torch (idempotent)."""
  import torch  # pylint: disable=g-import-not-at-top
  real = torch.library.register_fake
  if getattr(real, '_robustmq_shim', False):
    return

  def register_fake(op, func=None, /, **kwargs):
    def decorate(fn):
      try:
        return real(op, fn, **kwargs)
      except RuntimeError:
        if isinstance(op, str) and op.startswith('torchvision::'):
          return fn  # C op missing on CPU torch: nothing to fake.
        raise
    return decorate if func is None else decorate(func)

  register_fake._robustmq_shim = True  # pylint: disable=protected-access
  torch.library.register_fake = register_fake
