"""benchmarks/projection.py: a bad flag value is one sentence and exit 2."""

import os
import subprocess
import sys

import pytest

_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'benchmarks', 'projection.py')


@pytest.mark.parametrize('flag, field', [
    ('--decoders=pil,nope', "config.systematic.decoders='nope'"),
    ('--models=nope', "config.models='nope'"),
])
def test_bad_value_is_one_sentence_and_exit_2(flag, field):
  proc = subprocess.run(
      [sys.executable, _SCRIPT, flag], capture_output=True, text=True,
      env=dict(os.environ, JAX_PLATFORMS='cpu'), timeout=300, check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error: ')]
  assert len(errors) == 1 and field in errors[0] and 'allowed:' in errors[0]
  assert 'Traceback' not in proc.stderr
