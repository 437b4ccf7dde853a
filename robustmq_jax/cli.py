"""The jobs' command line: `--config.x=y` overrides, `--help`, errors."""

import os
import sys
from typing import Callable, NoReturn, Sequence

from absl import flags

from robustmq_jax import config_loading
from robustmq_jax import settings as settings_lib
from robustmq_jax.errors import UserError

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


def parse_flags(argv: Sequence[str], overrides: list[tuple[str, str]],
                help_text_fn: Callable[[], str]) -> list[str]:
  """absl's flag parsing with `--config.x=y` set aside into `overrides`.

  `--help` prints `help_text_fn()` and exits 0; a bad flag or override is
  one sentence and exit 2. The default verbosity shows warnings and the
  progress line only (-v 0 logs more).
  """
  if any(a in ('-h', '--help', '-help', '--helpshort') for a in argv[1:]):
    print_and_exit(help_text_fn())
  try:
    rest, found = split_argv(argv)
    overrides[:] = found
    rest = flags.FLAGS(rest)
    if flags.FLAGS['verbosity'].using_default_value:
      flags.FLAGS.verbosity = -1
    return rest
  except flags.Error as e:
    fail(f'{e}; see --help.')
  except UserError as e:
    fail(str(e))


def check_invocation(argv: Sequence[str]) -> None:
  """No positional arguments; --config and --workdir given (UserError)."""
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}; allowed: flags '
                    'only (--config, --workdir, --config.FIELD=VALUE).')
  for name in ('config', 'workdir'):
    if not flags.FLAGS[name].value:
      raise UserError(f'--{name} is required; see --help.')


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
