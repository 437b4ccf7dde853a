r"""The main job.

  python -m robustmq_jax.main --config=configs/vit_w4.py:sample \
      --workdir=/tmp/robustmq

Flags, JAX setup, then `runner.run(config, workdir)`. Bad input ends with one
sentence on stderr and exit code 2.
"""

import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from robustmq_jax import runner
from robustmq_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, e.g. configs/vit_w4.py or '
    'configs/vit_w4.py:sample.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None,
                               'Output folder (results, report, cache).')
_MULTIHOST = flags.DEFINE_bool(
    'multihost', False, 'Call jax.distributed.initialize() (TPU pods, SLURM, '
    'or JAX_COORDINATOR_ADDRESS etc. in the environment).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if _MULTIHOST.value:
    jax.distributed.initialize()
  logging.info('JAX: %d process(es), %d device(s) (%s)', jax.process_count(),
               jax.device_count(), jax.devices()[0].platform)
  try:
    runner.run(_CONFIG.value, _WORKDIR.value)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


def entry():
  app.run(main)


if __name__ == '__main__':
  entry()
