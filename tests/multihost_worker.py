"""One process of the two-process tests (see test_multihost.py).

Usage: python multihost_worker.py PORT PROCESS_ID NUM_PROCESSES [FOLDER
       [WORKERS]]

Prints JSON on the last line: the evaluator's sums over an in-memory
dataset, and with FOLDER, the sums over that class-per-folder JPEG tree read
through the file-backed pipeline (robustmq_jax/data/pipeline.py: a thread
pool, or WORKERS Grain worker processes) with the example ids this process
decoded.
"""

import json
import os
import sys

os.environ['JAX_PLATFORMS'] = 'cpu'
os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top


def main(port: int, pid: int, nproc: int, folder: str | None,
         workers: int) -> None:
  import jax
  if nproc > 1:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=f'localhost:{port}',
                               num_processes=nproc, process_id=pid)

  from robustmq_jax.data import iter_batches
  from robustmq_jax.data import pipeline
  from robustmq_jax.data.folder import FolderDataset
  from robustmq_jax.evaluation import Evaluator
  from robustmq_jax.evaluation import make_mesh
  from tests import fakes
  from tests.test_evaluation import per_example

  evaluator = Evaluator(make_mesh())
  local = 16 // jax.process_count()
  share = {'process_index': jax.process_index(),
           'process_count': jax.process_count()}
  out = {'devices': jax.device_count()}
  out.update(evaluator.sums(per_example, iter_batches(
      fakes.random_dataset(37), local, **share),
                            variables=fakes.linear_params()))
  if folder:
    ds = FolderDataset(folder, image_size=8,
                       decode_options=pipeline.DecodeOptions(workers=workers))
    decoded = []

    def recorded(batches):
      for b in batches:  # The ids this process read, padding rows aside.
        decoded.extend(int(i) for i in b.id[b.mask])
        yield b

    sums = evaluator.sums(per_example, recorded(iter_batches(
        ds, local, **share)), variables=fakes.linear_params())
    out['folder'] = dict(sums, ids=sorted(decoded))
  print(json.dumps(out))


if __name__ == '__main__':  # Grain's worker processes import this file.
  main(*(int(a) for a in sys.argv[1:4]),
       sys.argv[4] if len(sys.argv) > 4 else None,
       int(sys.argv[5]) if len(sys.argv) > 5 else 0)
