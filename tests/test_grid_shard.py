"""config.grid_shard: disjoint, balanced, deterministic shares that merge back.

The end-to-end property: a tiny grid (the embedded sample, two precisions,
the clean suite and two corruptions) run as shards 1/2 and 2/2 into two
workdirs and merged by scripts/make_report.py equals one unsharded run, row
for row (every field but the timing ones).
"""

import os
import subprocess
import sys

import pytest

from robustmq_jax import grid_shard
from robustmq_jax import runner
from robustmq_jax.errors import UserError
from robustmq_jax.results import cell_key
from robustmq_jax.results import read_rows
from tests.test_main import sample_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING = ('time_s', 'timestamp')


@pytest.mark.parametrize('text,want', [
    ('', None), ('1/1', (1, 1)), ('2/8', (2, 8)), (' 3/3', (3, 3))])
def test_parse_accepts_i_of_n(text, want):
  assert grid_shard.parse(text) == want


@pytest.mark.parametrize('text', ['0/2', '3/2', '1/0', '1', 'a/b', '1/2/3',
                                  '-1/2', 7])
def test_parse_refuses_with_one_sentence(text):
  with pytest.raises(UserError, match=r'config\.grid_shard=.*1 <= I <= N'):
    grid_shard.parse(text)


def test_assign_is_longest_processing_time_and_deterministic():
  costs = [7.0, 5.0, 4.0, 3.0, 3.0, 2.0, 1.0]
  shards = grid_shard.assign(costs, 3)
  assert shards == grid_shard.assign(list(costs), 3)
  load = [sum(c for c, s in zip(costs, shards) if s == k) for k in range(3)]
  # LPT: 7 | 5+2 | 4+3 and then 3+1 on the least loaded: loads 8, 8, 9.
  assert sorted(load) == [8.0, 8.0, 9.0]
  assert max(load) <= sum(costs) / 3 + max(costs)


def test_select_partitions_cells_and_keeps_groups_whole():
  cells = []
  for model in ('a', 'b'):
    for precision in ('fp32', 'w4a4', 'w2a2'):
      for suite, n in (('clean', 1), ('corruption', 20), ('adversarial', 4)):
        for _ in range(n):
          cells.append(((model, precision, suite), grid_shard.cell_cost(
              model, precision, suite, 'x', {'steps': 10}, 100)))
  for count in (1, 2, 3, 7):
    picks = [grid_shard.select(cells, i, count) for i in range(1, count + 1)]
    # Every cell in exactly one shard.
    assert all(sum(p[j] for p in picks) == 1 for j in range(len(cells)))
    for p in picks:  # A group is never split.
      groups = {}
      for (g, _), keep in zip(cells, p):
        groups.setdefault(g, set()).add(keep)
      assert all(len(v) == 1 for v in groups.values())
  costs = [sum(c for (_, c), k in zip(cells, p) if k) for p in (
      grid_shard.select(cells, 1, 2), grid_shard.select(cells, 2, 2))]
  assert max(costs) / min(costs) < 1.5  # Balanced by cost, not by count.


def test_cost_model_orders_suites_models_and_precisions():
  pgd = {'steps': 10, 'restarts': 1}
  cost = grid_shard.cell_cost
  assert cost('resnet18', 'fp32', 'adversarial', 'pgd_linf', pgd, 100) > (
      10 * cost('resnet18', 'fp32', 'clean', 'none', {}, 100))
  assert cost('resnet50', 'fp32', 'clean', 'none', {}, 100) > cost(
      'resnet18', 'fp32', 'clean', 'none', {}, 100)
  assert cost('resnet18', 'w4a4', 'clean', 'none', {}, 100) > cost(
      'resnet18', 'fp32', 'clean', 'none', {}, 100)


def _tiny_config(shard=''):
  config = sample_config(**{'data.num_examples': 24})
  config.precisions = ('fp32', 'w4a4')
  config.suites = ('clean', 'corruption')
  config.corruption.names = ('gaussian_noise', 'brightness')
  config.corruption.severities = (1,)
  config.corruption.num_examples = 16
  config.grid_shard = shard
  return config


def _comparable(rows):
  return sorted(({k: v for k, v in r.items() if k not in TIMING}
                 for r in rows), key=cell_key)


@pytest.mark.slow
def test_two_shards_merged_equal_one_unsharded_run(tmp_path):
  whole = runner.run(_tiny_config(), str(tmp_path / 'whole'))
  parts = [runner.run(_tiny_config(f'{i}/2'), str(tmp_path / f's{i}'))
           for i in (1, 2)]
  assert all(parts) and len(whole) == sum(len(p) for p in parts)
  assert not {cell_key(r) for r in parts[0]} & {cell_key(r) for r in parts[1]}
  subprocess.run([sys.executable, os.path.join(ROOT, 'scripts',
                                               'make_report.py'),
                  f'--workdir={tmp_path / "s1"}',
                  f'--workdir={tmp_path / "s2"}',
                  f'--out={tmp_path / "merged"}'], check=True, cwd=ROOT,
                 capture_output=True, timeout=300)
  merged = read_rows(str(tmp_path / 'merged' / 'results.jsonl'))
  assert _comparable(merged) == _comparable(whole)
  assert (tmp_path / 'merged' / 'report.md').exists()
  # The inputs are left as they were.
  assert len(read_rows(str(tmp_path / 's1' / 'results.jsonl'))) == len(
      parts[0])


def test_a_shard_with_nothing_to_do_still_leaves_a_workdir(tmp_path):
  config = sample_config()  # One (model, precision, suite) group.
  config.grid_shard = '2/2'
  assert runner.run(config, str(tmp_path)) == []
  assert read_rows(str(tmp_path / 'results.jsonl')) == []  # Merges as empty.
  assert (tmp_path / 'report.md').exists()
