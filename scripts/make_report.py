r"""Regenerates a workdir's report from its results.jsonl, evaluating nothing.

Writes report.md, report.html (self-contained), findings.json, results.csv
and plots/ (robustmq_jax.reporting.write_report):

  python scripts/make_report.py --workdir=/tmp/robustmq [--workdir=DIR2 ...]
"""

import os

from absl import app
from absl import flags

from robustmq_jax import reporting
from robustmq_jax.results import read_rows
from robustmq_jax.results import RESULTS_FILE

_WORKDIR = flags.DEFINE_multi_string(
    'workdir', None, 'Folder with results.jsonl (repeat for several).')
flags.mark_flag_as_required('workdir')


def main(argv):
  del argv
  for workdir in _WORKDIR.value:
    if not os.path.exists(os.path.join(workdir, RESULTS_FILE)):
      raise app.UsageError(f'--workdir={workdir!r} has no {RESULTS_FILE}.')
  for workdir in _WORKDIR.value:
    path = os.path.join(workdir, RESULTS_FILE)
    print(reporting.write_report(workdir, read_rows(path)))


if __name__ == '__main__':
  app.run(main)
