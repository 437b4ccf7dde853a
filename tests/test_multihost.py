"""Two processes through jax.distributed (localhost, CPU collectives)."""

import json
import os
import socket
import subprocess
import sys

_WORKER = os.path.join(os.path.dirname(__file__), 'multihost_worker.py')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _run(nproc: int) -> list[dict]:
  port = _free_port()
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)
  procs = [subprocess.Popen([sys.executable, _WORKER, str(port), str(i),
                             str(nproc)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
           for i in range(nproc)]
  outs = []
  for p in procs:
    out, err = p.communicate(timeout=240)
    assert p.returncode == 0, err[-3000:]
    outs.append(json.loads(out.strip().splitlines()[-1]))
  return outs


def test_two_processes_give_the_same_sums_as_one():
  single = _run(1)[0]
  multi = _run(2)
  assert multi[0]['devices'] == 4  # 2 processes x 2 CPU devices.
  for m in multi:
    assert {k: v for k, v in m.items() if k != 'devices'} == {
        k: v for k, v in single.items() if k != 'devices'}
  assert single['n'] == 37
