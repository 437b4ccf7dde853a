r"""Regenerates a workdir's report from its results.jsonl, evaluating nothing.

Writes report.md, report.html (self-contained), findings.json, results.csv
and plots/ (robustmq_jax.reporting.write_report):

  python scripts/make_report.py --workdir=/tmp/robustmq
"""

import os

from absl import app
from absl import flags

from robustmq_jax import reporting
from robustmq_jax.results import read_rows
from robustmq_jax.results import RESULTS_FILE

_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder with results.jsonl.')
flags.mark_flag_as_required('workdir')


def main(argv):
  del argv
  path = os.path.join(_WORKDIR.value, RESULTS_FILE)
  if not os.path.exists(path):
    raise app.UsageError(f'--workdir={_WORKDIR.value!r} has no {RESULTS_FILE}.')
  print(reporting.write_report(_WORKDIR.value, read_rows(path)))


if __name__ == '__main__':
  app.run(main)
