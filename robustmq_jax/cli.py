"""The main job's command line: `--config.x=y` overrides, `--help`, errors."""

import os
import sys
from typing import NoReturn, Sequence

from robustmq_jax import config_loading
from robustmq_jax import settings as settings_lib

split_argv = config_loading.split_argv


def fail(message: str) -> NoReturn:
  """Prints `error: <one line>` on stderr and exits with code 2."""
  print('error: ' + ' '.join(message.split()), file=sys.stderr)
  sys.exit(2)


def print_and_exit(text: str) -> NoReturn:
  """Prints to stdout and exits 0 (quietly, if the reader went away)."""
  try:
    print(text, flush=True)
  except BrokenPipeError:
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
  sys.exit(0)


def help_text(prog: str = 'python -m robustmq_jax.main') -> str:
  """`--help`: usage, configs and their args, main fields, override syntax."""
  if prog.endswith('.py') or prog.endswith('__main__') or '/' in prog:
    prog = 'python -m robustmq_jax.main'
  fields = '\n'.join(f'  {k:<22} {v}' if len(k) < 22 else f'  {k}\n'
                     f'  {"":<22} {v}' for k, v in settings_lib.FIELDS.items())
  return f"""\
Measures how quantization changes the robustness of image classifiers.

usage: {prog} --config=FILE[:ARG] --workdir=DIR
           [--config.FIELD=VALUE ...]

flags:
  --config=FILE[:ARG]    a config file (Python, get_config(arg)) and its arg
  --workdir=DIR          output folder: results.jsonl, report.md/html, cache/
  --multihost            call jax.distributed.initialize() (pods, SLURM)
  -v 0                   log every row (default: one progress line)
  --helpfull             every flag, logging and JAX ones included

configs (--config=FILE:ARG):
{config_loading.describe_configs()}

main fields (--config.FIELD=VALUE):
{fields}

overrides are typed by the field they replace; lists are comma-separated
or a Python literal; `checkpoints.<model>` accepts any model name:
  --config.seed=3 --config.data.num_examples=64
  --config.suites=clean,adversarial --config.precisions=fp32,w4a4
  "--config.adversarial.attacks=('fgsm','pgd_linf','autoattack')"
  --config.models=resnet50 --config.checkpoints.resnet50=/ckpt/resnet50

A rerun with the same workdir skips finished cells. Bad input stops the job
before anything is written: one sentence on stderr, exit code 2."""
