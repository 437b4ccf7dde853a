r"""Every benchmark of benchmarks/ with quick settings, one table of ratios.

  python benchmarks/all.py --out=/tmp/bench            # all, quick settings
  python benchmarks/all.py --out=/tmp/bench --only=attacks,corruptions
  python benchmarks/all.py --out=/tmp/bench --full     # their default settings

Runs each benchmark script in its own process (its own XLA flags, devices
and threads; one that fails does not stop the others), with the quick
arguments of `BENCHMARKS` below (the scripts' defaults are unchanged; a
quick run measures the same comparisons on fewer images, repeats or
models). Writes to `--out`:

  results.md    one Markdown table: benchmark, comparison, ratio, goal,
                detail; then one line per benchmark (status, seconds);
  results.json  the same rows and statuses;
  logs/NAME.log each script's stdout and stderr.

A benchmark whose import fails for a missing module (torchattacks,
imagecorruptions, aqtp, ... on a machine without them) is reported as
skipped with that module's name; a competitor missing inside a script
(e.g. torchattacks in attacks.py) is a 'skipped' row of that script. The
machine's load average is recorded with every run: ratios are measured
side by side inside each script, absolute times are not comparable across
runs on a shared machine.
"""

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

Row = tuple[str, str, str, str]  # comparison, ratio, goal, detail


@dataclasses.dataclass(frozen=True)
class Benchmark:
  """One script: its quick arguments and how to read its ratios.

  Attributes:
    name: the script's name in benchmarks/ (without .py).
    quick: arguments of the quick run.
    parse: stdout -> rows (comparison, ratio, goal, detail).
    slow: runs the main job in subprocesses (minutes even when quick).
  """
  name: str
  quick: tuple[str, ...]
  parse: Callable[[str], list[Row]]
  slow: bool = False


def _cells(line: str) -> list[str]:
  return [c.strip() for c in line.strip().strip('|').split('|')]


def markdown_rows(text: str, ratio_column: str,
                  label_columns: tuple[str, ...], goal: str = '') -> list[Row]:
  """Rows of every Markdown table of `text` with a `ratio_column` header."""
  rows, header = [], None
  for line in text.splitlines():
    if not line.startswith('|'):
      header = None
      continue
    cells = _cells(line)
    if header is None:
      header = cells
      continue
    if set(line) <= set('|-: '):
      continue
    if ratio_column not in header or len(cells) != len(header):
      continue
    row = dict(zip(header, cells))
    label = ' '.join(row[c] for c in label_columns if c in row)
    rows.append((label, row[ratio_column], row.get('goal', goal),
                 row.get('detail', '')))
  return rows


def ratio_lines(text: str, goal: str = '') -> list[Row]:
  """`ratio X` / `ratio maps X rss Y` lines (the scripts' last line)."""
  rows = []
  for line in text.splitlines():
    m = re.match(r'^ratio\s+(.*)$', line.strip())
    if m and re.search(r'\d', m.group(1)):
      rows.append(('ratio', m.group(1), goal, ''))
  return rows


def parse_attacks(text: str) -> list[Row]:
  rows = markdown_rows(text, 'ratio', ('', 'comparison'))
  return [(c, r, g, d) for c, r, g, d in rows]


def parse_corruptions(text: str) -> list[Row]:
  rows = []
  for line in text.splitlines():
    m = re.match(r'^(\w+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x\s', line)
    if m:
      rows.append((f'{m.group(1)}: ours / imagecorruptions images/s',
                   m.group(4), '>= 1.5',
                   f'ours {m.group(2)} img/s, reference {m.group(3)} img/s'))
    m = re.match(r'^geometric mean speed-up: ([\d.]+)x(.*)$', line)
    if m:
      rows.append(('geometric mean over the corruptions', m.group(1),
                   '>= 20', m.group(2).strip('; ')))
  return rows


def parse_forward(text: str) -> list[Row]:
  rows, arch = [], ''
  for line in text.splitlines():
    if line and not line.startswith(' ') and ' ' not in line.strip():
      arch = line.strip()
    m = re.match(r'^\s+(ours\[\w+\])\s+([\d.]+) img/s\s+ours/NCHW ([\d.]+)'
                 r'\s+ours/CL ([\d.]+)', line)
    if m:
      rows.append((f'{arch} {m.group(1)} / timm NCHW images/s', m.group(3),
                   '', f'{m.group(2)} img/s; / timm channels_last '
                   f'{m.group(4)}'))
  return rows


def parse_quant(text: str) -> list[Row]:
  return markdown_rows(text, 'vs float', ('model', 'forward'), '<= 1.3')


def parse_systematic(text: str) -> list[Row]:
  """Rows 'method host_ms ours_ms ratio e2e_ms ratio ...' (14-char names)."""
  rows = []
  for line in text.splitlines():
    name, rest = line[:14].strip(), line[14:].split()
    if not name or name in ('method', 'ratio') or len(rest) < 3:
      continue
    try:
      host, ours, ratio = (float(v) for v in rest[:3])
    except ValueError:
      continue
    rows.append((f'resize {name}: host / ours time', f'{ratio:.2f}', '',
                 f'host {host} ms, ours {ours} ms'))
  return rows


def parse_projection(text: str) -> list[Row]:
  rows = []
  for line in text.splitlines():
    m = re.match(r'^total ([\d,.]+) device-hours(.*)$', line.strip())
    if m:
      rows.append(('projected ImageNet grid, device-hours (not a ratio)',
                   m.group(1), '', m.group(2).strip()))
    m = re.match(r'^ImageNet-C grid (.*) = ([\d,.]+) min$', line.strip())
    if m:
      rows.append(('projected ImageNet-C grid on one device, minutes (not a '
                   'ratio)', m.group(2), '< 10 (GPU)', m.group(1)))
  return rows


BENCHMARKS = (
    Benchmark('attacks', ('--quick',), parse_attacks),
    Benchmark('corruptions', ('--quick',), parse_corruptions),
    Benchmark('forward', ('--batch_size=8', '--repeats=2'), parse_forward),
    Benchmark('grouped_conv', ('--batch=16', '--repeats=2'),
              lambda t: markdown_rows(t, 'speed-up', ('model', 'program'),
                                      '>= 1')),
    Benchmark('quant', ('--batch=8', '--repeats=2'), parse_quant),
    Benchmark('cpu_kernels', ('--batch=16', '--repeats=2',
                              '--models=resnet20_cifar,vit_tiny_patch4_32'),
              lambda t: markdown_rows(t, 'eigen_convs speed-up',
                                      ('model', 'precision', 'program'))),
    Benchmark('systematic', ('--repeats', '2', '--n', '8'),
              parse_systematic),
    Benchmark('input', ('--images=64', '--rounds=1', '--noforward'),
              lambda t: ratio_lines(t, '>= 1')),
    Benchmark('projection', ('--batch=2', '--iters=1'), parse_projection,
              slow=True),
    Benchmark('memory', ('--grid=fp32', '--grid=fp32,w4a4'),
              lambda t: ratio_lines(t, '< 1.5'), slow=True),
    Benchmark('train_split', ('--small=40', '--large=400', '--repeats=1'),
              lambda t: ratio_lines(t, '< 1.2'), slow=True),
)

_MISSING = re.compile(r"ModuleNotFoundError: No module named '([\w.]+)'")


def run_one(bench: Benchmark, out_dir: str, *, full: bool, timeout_s: float,
            script_dir: str = HERE) -> dict:
  """Runs one script; returns its status record with parsed rows."""
  args = [] if full else list(bench.quick)
  cmd = [sys.executable, os.path.join(script_dir, bench.name + '.py')] + args
  log_path = os.path.join(out_dir, 'logs', bench.name + '.log')
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(
      p for p in (ROOT, env.get('PYTHONPATH', '')) if p)
  t = time.perf_counter()
  try:
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout_s, check=False)
    stdout, stderr, code = proc.stdout, proc.stderr, proc.returncode
  except subprocess.TimeoutExpired as e:
    stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (
        e.stdout or '')
    stderr = f'timed out after {timeout_s:.0f} s'
    code = None
  seconds = time.perf_counter() - t
  with open(log_path, 'w') as f:
    f.write(f'$ {" ".join(cmd)}\n{stdout}\n--- stderr ---\n{stderr}')
  shown = [os.path.relpath(cmd[1], ROOT)] + cmd[2:]
  record = {'name': bench.name, 'command': ' '.join(shown),
            'seconds': round(seconds, 1), 'rows': []}
  missing = _MISSING.search(stderr)
  if code == 0:
    record['status'] = 'ok'
  elif missing:
    record['status'] = f'skipped: {missing.group(1)} is not installed'
  elif code is None:
    record['status'] = stderr
  else:
    last = [l for l in stderr.strip().splitlines() if l.strip()][-1:]
    record['status'] = f'failed (exit {code}): {" ".join(last)[:200]}'
  try:
    rows = bench.parse(stdout)
  except Exception as e:  # pylint: disable=broad-except
    rows = []
    record['status'] += f'; output not understood ({e!r})'
  record['rows'] = [dict(zip(('comparison', 'ratio', 'goal', 'detail'), r))
                    for r in rows]
  return record


def markdown(records: list[dict], header: str) -> str:
  lines = [header, '', '| benchmark | comparison | ratio | goal | detail |',
           '|---|---|---|---|---|']
  for rec in records:
    for r in rec['rows']:
      cells = [rec['name'], r['comparison'], r['ratio'], r['goal'],
               r['detail']]
      lines.append('| ' + ' | '.join(c.replace('|', '/') for c in cells)
                   + ' |')
  lines.append('')
  for rec in records:
    lines.append(f'- `{rec["name"]}` ({rec["command"]}): {rec["status"]}, '
                 f'{rec["seconds"]:.0f} s')
  return '\n'.join(lines) + '\n'


def main(argv=None, benchmarks=BENCHMARKS, script_dir: str = HERE):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', required=True, help='output folder')
  parser.add_argument('--only', default='', help='comma-separated names')
  parser.add_argument('--skip', default='', help='comma-separated names')
  parser.add_argument('--slow', action='store_true',
                      help='also the benchmarks that run the main job '
                      '(projection, memory, train_split)')
  parser.add_argument('--full', action='store_true',
                      help="the scripts' default settings, not the quick ones")
  parser.add_argument('--timeout_s', type=float, default=1800.0,
                      help='per benchmark')
  args = parser.parse_args(argv)
  names = {b.name for b in benchmarks}
  for flag in ('only', 'skip'):
    for n in filter(None, getattr(args, flag).split(',')):
      if n not in names:
        parser.error(f'--{flag}={n}: unknown benchmark; known: '
                     f'{", ".join(sorted(names))}')
  only = set(filter(None, args.only.split(',')))
  skip = set(filter(None, args.skip.split(',')))
  chosen = [b for b in benchmarks
            if (b.name in only if only else (args.slow or not b.slow))
            and b.name not in skip]
  os.makedirs(os.path.join(args.out, 'logs'), exist_ok=True)
  load = os.getloadavg()[0]
  header = (f'# Benchmarks ({"full" if args.full else "quick"} settings), '
            f'{time.strftime("%Y-%m-%d %H:%M")}, python {sys.version.split()[0]}'
            f', {os.cpu_count()} CPUs, load average {load:.1f} at the start')
  records = []
  for bench in chosen:
    print(f'{bench.name} ...', flush=True)
    rec = run_one(bench, args.out, full=args.full, timeout_s=args.timeout_s,
                  script_dir=script_dir)
    records.append(rec)
    print(f'{bench.name}: {rec["status"]}, {rec["seconds"]:.0f} s, '
          f'{len(rec["rows"])} rows', flush=True)
  text = markdown(records, header)
  with open(os.path.join(args.out, 'results.md'), 'w') as f:
    f.write(text)
  with open(os.path.join(args.out, 'results.json'), 'w') as f:
    json.dump({'header': header, 'load_average': load,
               'benchmarks': records}, f, indent=1)
  print(text)
  return records


if __name__ == '__main__':
  main()
