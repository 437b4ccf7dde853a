r"""The main job.

  python -m robustmq_jax.main --config=configs/vit_w4.py:sample \
      --workdir=/tmp/robustmq [--config.FIELD=VALUE ...]

Flags, JAX setup, then `runner.run(settings, workdir)`. The config is loaded,
overridden and validated once (robustmq_jax/settings.py) before anything is
written; bad input ends with one sentence on stderr and exit code 2. `--help`
lists the configs, their args, the main fields and the override syntax.
"""

import sys
from typing import Sequence

from absl import app
from absl import flags
from absl import logging
import jax

from robustmq_jax import cli
from robustmq_jax import config_fields
from robustmq_jax import config_loading
from robustmq_jax import jax_setup
from robustmq_jax import models as models_lib
from robustmq_jax import runner
from robustmq_jax import settings as settings_lib
from robustmq_jax.errors import UserError

_CONFIG = flags.DEFINE_string(
    'config', None, 'Config file and arg, e.g. configs/vit_w4.py:sample.')
_WORKDIR = flags.DEFINE_string('workdir', None,
                               'Output folder (results, report, cache).')
_COMPILATION_CACHE = flags.DEFINE_string(
    'compilation_cache', 'auto', "JAX's persistent compilation cache: "
    "'auto' ($XDG_CACHE_HOME or ~/.cache, /robustmq_jax/xla), a folder, or "
    "'off'. A rerun (into any workdir) then skips compiling what an earlier "
    'run compiled.')
_MULTIHOST = flags.DEFINE_bool(
    'multihost', False, 'Call jax.distributed.initialize() (TPU pods, SLURM, '
    'or JAX_COORDINATOR_ADDRESS etc. in the environment).')

_OVERRIDES: list[tuple[str, str]] = []


def _parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing, with `--config.x=y` set aside and errors as exit 2."""
  return cli.parse_flags(argv, _OVERRIDES, lambda: cli.help_text(argv[0]))


def main(argv: Sequence[str]) -> None:
  try:
    cli.check_invocation(argv)
    if _MULTIHOST.value:  # Before anything asks JAX for its devices.
      jax.distributed.initialize()
    jax_setup.compilation_cache(_COMPILATION_CACHE.value)
    config = config_loading.load(_CONFIG.value, job=config_loading.MAIN_JOB)
    config_loading.apply_overrides(config, _OVERRIDES)
    # Before validation, which asks JAX for its devices.
    jax_setup.select_cpu_kernels(_model_infos(config))
    settings = settings_lib.from_config(config)
    settings_lib.check_workdir(_WORKDIR.value)
    logging.info('JAX: %d process(es), %d device(s) (%s)', jax.process_count(),
                 jax.device_count(), jax.devices()[0].platform)
    runner.run(settings, _WORKDIR.value)
  except UserError as e:
    cli.fail(str(e))
  except KeyboardInterrupt:
    print('\ninterrupted: the rows written so far are kept; rerun the same '
          'command to resume.', file=sys.stderr)
    sys.exit(130)


def _model_infos(config) -> list[models_lib.ModelInfo]:
  """The configured models' facts (unknown names: validated later)."""
  try:
    names = config_fields.name_list(config, 'models')
  except UserError:
    return []
  known = set(models_lib.list_models())
  return [models_lib.model_info(n) for n in names if n in known]


def entry() -> None:
  app.run(main, flags_parser=_parse_flags)


if __name__ == '__main__':
  entry()
