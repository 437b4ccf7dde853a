r"""The QAT job: a float checkpoint -> a quantized checkpoint.

  python -m robustmq_jax.train --config=configs/qat.py[:ARG] --workdir=DIR \
      [--config.FIELD=VALUE ...]

Flags, JAX setup, then `run(config, workdir)` (robustmq_jax/training/
qat_job.py): calibrate, train data-parallel over the mesh with an orbax
checkpoint every `config.checkpoint_every` steps in DIR/checkpoints (a
rerun resumes from the latest one and ends with the same weights as an
uninterrupted run), export DIR/export/<model>/<precision>_<method>. Bad
input ends with one sentence on stderr and exit code 2; `--help` lists the
args of configs/qat.py and the fields.
"""

import os
import sys
from typing import Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections

from robustmq_jax import cli
from robustmq_jax import config_loading
from robustmq_jax import jax_setup
from robustmq_jax import models as models_lib
from robustmq_jax import settings as settings_lib
from robustmq_jax.errors import invalid
from robustmq_jax.errors import UserError
from robustmq_jax.training import qat_job
from robustmq_jax.training import qat_settings

_OVERRIDES: list[tuple[str, str]] = []
# Defined by `entry` (not at import, where they would clash with the main
# job's flags of the same names in a process that imports both).
_FLAGS = {
    'config': ('Config file and arg, e.g. configs/qat.py:smoke.', None),
    'workdir': ('Run folder: checkpoints/ (orbax), export/.', None),
    'compilation_cache': ("JAX's persistent compilation cache: 'auto', a "
                          "folder, or 'off'.", 'auto'),
}


def run(config: ml_collections.ConfigDict | qat_settings.QatSettings,
        workdir: str) -> str | None:
  """Validates `config` (configs/qat.py) and trains; see qat_job.run."""
  settings = (config if isinstance(config, qat_settings.QatSettings)
              else qat_settings.from_config(config))
  return qat_job.run(settings, workdir)


def check_workdir(workdir: str) -> None:
  """The main job's workdir check, and a local parent that exists."""
  settings_lib.check_workdir(workdir)
  if '://' in workdir:
    return
  parent = os.path.dirname(os.path.abspath(workdir))
  if not os.path.isdir(parent):
    raise invalid('--workdir', workdir,
                  f'a folder whose parent exists ({parent} does not)')


def help_text() -> str:
  args = '\n'.join(f'  :{a:<10} {t}' for a, t in config_loading.load_module(
      'configs/qat.py').ARGS.items())
  fields = qat_settings.__doc__.split('Fields', 1)[1].split('\n', 1)[1].strip(
      '\n')
  return f"""\
Quantization-aware training of a float checkpoint (DoReFa, PACT, LSQ).

usage: python -m robustmq_jax.train --config=configs/qat.py[:ARG] --workdir=DIR
           [--config.FIELD=VALUE ...] [--multihost]

args of configs/qat.py:
{args}

fields (--config.FIELD=VALUE):
{fields}

A rerun with the same workdir resumes from the latest checkpoint. Bad
input stops the job before anything is written: one sentence on stderr,
exit code 2."""


def _parse_flags(argv: Sequence[str]) -> list[str]:
  return cli.parse_flags(argv, _OVERRIDES, help_text)


def main(argv: Sequence[str]) -> None:
  try:
    cli.check_invocation(argv)
    if flags.FLAGS.multihost:  # Before anything asks JAX for its devices.
      jax.distributed.initialize()
    jax_setup.compilation_cache(flags.FLAGS.compilation_cache)
    config = config_loading.load(flags.FLAGS.config, job=qat_settings.JOB)
    config_loading.apply_overrides(config, _OVERRIDES)
    model = config.get('model')
    if model in models_lib.list_models():  # Before JAX makes its backends.
      jax_setup.select_cpu_kernels([models_lib.model_info(model)])
    settings = qat_settings.from_config(config)
    workdir = flags.FLAGS.workdir
    check_workdir(workdir)
    logging.info('JAX: %d process(es), %d device(s) (%s)', jax.process_count(),
                 jax.device_count(), jax.devices()[0].platform)
    run(settings, workdir)
  except UserError as e:
    cli.fail(str(e))
  except KeyboardInterrupt:
    print('\ninterrupted: the checkpoints written so far are kept; rerun the '
          'same command to resume.', file=sys.stderr)
    sys.exit(130)


def _define_flags() -> None:
  for name, (text, default) in _FLAGS.items():
    if name not in flags.FLAGS:
      flags.DEFINE_string(name, default, text)
  if 'multihost' not in flags.FLAGS:
    flags.DEFINE_bool('multihost', False, 'Call jax.distributed.initialize() '
                      '(TPU pods, SLURM).')


def entry() -> None:
  _define_flags()
  app.run(main, flags_parser=_parse_flags)


if __name__ == '__main__':
  entry()
