r"""Regenerates a report from results.jsonl, evaluating nothing.

Writes report.md, report.html (self-contained), findings.json, results.csv
and plots/ (robustmq_jax.reporting.write_report):

  python scripts/make_report.py --workdir=/tmp/robustmq

Several workdirs (the jobs of one study split with `--config.grid_shard=I/N`,
or any runs to compare) are merged into one report: their rows, each full
key once, go to `--out` (default: the first --workdir). A new `--out` folder
also gets the merged results.jsonl, so it is a workdir like any other; the
input workdirs' results.jsonl are never changed:

  python scripts/make_report.py --workdir=/runs/s1 --workdir=/runs/s2 \
      --out=/runs/merged

Workdirs may be gs:// paths (etils.epath). Bad input: one sentence, exit 2.
"""

import sys

from absl import app
from absl import flags

from robustmq_jax import reporting
from robustmq_jax.results import files
from robustmq_jax.results import merge
from robustmq_jax.results import read_rows
from robustmq_jax.results import RESULTS_FILE
from robustmq_jax.results import ResultStore

_WORKDIR = flags.DEFINE_multi_string(
    'workdir', None, 'Folder with results.jsonl (repeat to merge several).')
_OUT = flags.DEFINE_string(
    'out', None, 'Folder of the (merged) report; default: the first '
    '--workdir. A folder that is not one of the --workdir also gets the '
    'merged results.jsonl.')


def _fail(message: str) -> None:
  print('error: ' + message, file=sys.stderr)
  sys.exit(2)


def main(argv):
  if len(argv) > 1:
    _fail(f'unexpected arguments {argv[1:]}; allowed: --workdir=DIR '
          '(repeatable) and --out=DIR.')
  workdirs = _WORKDIR.value or []
  if not workdirs:
    _fail('--workdir is required; allowed: a folder with results.jsonl, '
          'repeated to merge several.')
  for workdir in workdirs:
    if not (files.path(workdir) / RESULTS_FILE).exists():
      _fail(f'--workdir={workdir!r} is not valid; allowed: a folder with '
            f'{RESULTS_FILE}.')
  rows = merge([read_rows(files.path(w) / RESULTS_FILE) for w in workdirs])
  out = _OUT.value or workdirs[0]
  same = {str(files.path(w)) for w in workdirs}
  if str(files.path(out)) not in same:
    store = ResultStore(out)
    store.extend(rows)
    store.flush()
  with files.local_folder(out) as local:
    reporting.write_report(local, rows)
  print(f'{len(rows)} rows from {len(workdirs)} workdir(s): '
        f'{files.path(out) / "report.md"}')


if __name__ == '__main__':
  app.run(main)
