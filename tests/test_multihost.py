"""Two processes through jax.distributed (localhost, CPU collectives).

Each run starts 1 or 2 processes of multihost_worker.py with 2 CPU devices
each. They evaluate an in-memory dataset and a class-per-folder tree of
fake-ImageNet JPEGs read through the file-backed pipeline; two processes
must read disjoint shares that together are the whole split, and give the
same sums as one process.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

from robustmq_jax.data import fake_imagenet

_WORKER = os.path.join(os.path.dirname(__file__), 'multihost_worker.py')
_CLASSES, _PER_CLASS = 3, 9  # 27 JPEGs: uneven over 2 processes x 8 rows.


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _run(nproc: int, *extra: str) -> list[dict]:
  port = _free_port()
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)
  procs = [subprocess.Popen([sys.executable, _WORKER, str(port), str(i),
                             str(nproc), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
           for i in range(nproc)]
  outs = []
  for p in procs:
    out, err = p.communicate(timeout=400)
    assert p.returncode == 0, err[-3000:]
    outs.append(json.loads(out.strip().splitlines()[-1]))
  return outs


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp('fake_imagenet') / 'val'
  fake_imagenet.write_folder(str(root), _CLASSES, _PER_CLASS)
  return str(root)


def _compare(single, multi):
  assert multi[0]['devices'] == 4  # 2 processes x 2 CPU devices.
  total = _CLASSES * _PER_CLASS
  assert single['folder']['ids'] == list(range(total))
  shares = [set(m['folder']['ids']) for m in multi]
  assert shares[0] and shares[1] and not shares[0] & shares[1]
  assert shares[0] | shares[1] == set(range(total))
  drop = ('devices', 'ids')
  want = {k: v for k, v in single.items() if k not in drop}
  want['folder'] = {k: v for k, v in single['folder'].items() if k not in drop}
  assert want['folder']['n'] == total
  for m in multi:  # Every process holds the global sums.
    got = {k: v for k, v in m.items() if k not in drop}
    got['folder'] = {k: v for k, v in m['folder'].items() if k not in drop}
    assert got == want


def test_two_processes_read_disjoint_shares_and_give_the_same_sums(folder):
  single = _run(1, folder)[0]
  multi = _run(2, folder)
  assert single['n'] == 37
  _compare(single, multi)


@pytest.mark.slow
def test_grain_worker_processes_give_the_same_shares_and_sums(folder):
  # Grain's mp_prefetch (DecodeOptions(workers=1)) instead of threads.
  single = _run(1, folder, '1')[0]
  multi = _run(2, folder, '1')
  _compare(single, multi)
