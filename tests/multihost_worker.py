"""One process of the two-process test (see test_multihost.py).

Usage: python multihost_worker.py PORT PROCESS_ID NUM_PROCESSES
Prints the evaluator's sums as JSON on the last line.
"""

import json
import os
import sys

os.environ['JAX_PLATFORMS'] = 'cpu'
os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top

port, pid, nproc = (int(a) for a in sys.argv[1:4])
if nproc > 1:
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=f'localhost:{port}',
                             num_processes=nproc, process_id=pid)

from robustmq_jax.data import iter_batches  # pylint: disable=g-import-not-at-top
from robustmq_jax.evaluation import Evaluator  # pylint: disable=g-import-not-at-top
from robustmq_jax.evaluation import make_mesh  # pylint: disable=g-import-not-at-top
from tests import fakes  # pylint: disable=g-import-not-at-top
from tests.test_evaluation import per_example  # pylint: disable=g-import-not-at-top

ds = fakes.random_dataset(37)
evaluator = Evaluator(make_mesh())
local = 16 // jax.process_count()
sums = evaluator.sums(per_example, iter_batches(
    ds, local, process_index=jax.process_index(),
    process_count=jax.process_count()), variables=fakes.linear_params())
print(json.dumps({'devices': jax.device_count(), **sums}))
