r"""Converts pretrained torchvision / timm / big_vision weights to our format.

  python scripts/convert_weights.py --family=torchvision --arch=resnet18 \
      --input=resnet18.pth --output=checkpoints/imagenet/resnet18/fp32
  python scripts/convert_weights.py --family=timm \
      --arch=vit_small_patch16_224 --input=model.safetensors --output=DIR
  python scripts/convert_weights.py --family=timm --arch=regnetx_600mf \
      --input=model.safetensors --output=checkpoints/imagenet/regnetx_600mf/fp32
  python scripts/convert_weights.py --family=torchvision --arch=mobilenet_v2 \
      --input=mobilenet_v2.pth --output=checkpoints/imagenet/mobilenet_v2/fp32
  python scripts/convert_weights.py --family=big_vision \
      --arch=vit_small_patch16_224 --input=S_16.npz --output=DIR

Writes DIR/model.json + DIR/variables.msgpack, loadable with
`robustmq_jax.checkpoints.load(DIR)`. Never downloads anything (see
checkpoints/README.md for how to fetch the weights). Bad input: one-sentence
error, exit status 2.
"""

import sys

from absl import app
from absl import flags

from robustmq_jax import checkpoints
from robustmq_jax.errors import UserError

_FAMILY = flags.DEFINE_string(
    'family', None, 'Source: ' + ', '.join(checkpoints.FAMILIES) + '.')
_ARCH = flags.DEFINE_string('arch', None, 'Target model name, e.g. resnet18.')
_INPUT = flags.DEFINE_string(
    'input', None, 'State dict (.pth/.pt/.bin/.safetensors) or .npz file.')
_OUTPUT = flags.DEFINE_string('output', None, 'Checkpoint folder to write.')
_MEAN = flags.DEFINE_list('mean', None, 'Input mean override, 3 floats.')
_STD = flags.DEFINE_list('std', None, 'Input std override, 3 floats.')
_GELU = flags.DEFINE_enum('gelu', None, ['exact', 'tanh'],
                          'GELU override for ViTs (default per family).')


def _floats(name: str, values: list[str] | None) -> tuple[float, ...] | None:
  if values is None:
    return None
  try:
    out = tuple(float(v) for v in values)
  except ValueError:
    out = ()
  if len(out) != 3:
    raise UserError(f'--{name}={",".join(values)!r} is not valid; allowed: '
                    'three comma-separated floats.')
  return out


def run() -> dict:
  """Converts according to the flags; returns the written model.json."""
  for flag in (_FAMILY, _ARCH, _INPUT, _OUTPUT):
    if not flag.value:
      raise UserError(f'--{flag.name} is required.')
  gelu = None if _GELU.value is None else _GELU.value == 'tanh'
  return checkpoints.convert_file(
      _FAMILY.value, _ARCH.value, _INPUT.value, _OUTPUT.value,
      mean=_floats('mean', _MEAN.value), std=_floats('std', _STD.value),
      gelu_approximate=gelu)


def main(argv):
  if len(argv) > 1:
    print(f'error: unexpected arguments {argv[1:]}', file=sys.stderr)
    return 2
  try:
    spec = run()
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'wrote {_OUTPUT.value}: model={spec["model"]} '
        f'num_classes={spec["num_classes"]} '
        f'model_kwargs={spec["model_kwargs"]}')
  return 0


if __name__ == '__main__':
  app.run(main)
