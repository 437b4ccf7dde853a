r"""Runs the main job's command line on many argument lists, cheaply.

  python tests/cli_batch.py CASES.json OUT.json

CASES.json is a list of argument lists (without the program name). The
heavy imports happen once; each case then runs `robustmq_jax.main.entry()`
in a forked child process with its own argv, stdout and stderr, exactly as
`python -m robustmq_jax.main ARGS` would, and OUT.json gets one
{"code", "stdout", "stderr"} per case. Not a test module (no `test_` prefix).
"""

import json
import os
import sys
import tempfile
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from robustmq_jax import main as main_lib  # pylint: disable=g-import-not-at-top


def run_case(argv: list[str], scratch: str) -> dict[str, object]:
  """One forked run of the CLI; its exit code and captured output."""
  out_path = os.path.join(scratch, 'stdout')
  err_path = os.path.join(scratch, 'stderr')
  pid = os.fork()
  if pid == 0:
    code = 1
    try:
      for path, fd in ((out_path, 1), (err_path, 2)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
      sys.argv = ['robustmq_jax/main.py'] + list(argv)
      main_lib.entry()
      code = 0
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else (0 if e.code is None
                                                     else 1)
    except BaseException:  # pylint: disable=broad-except
      traceback.print_exc()
    finally:
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(code)  # pylint: disable=protected-access
  _, status = os.waitpid(pid, 0)
  with open(out_path) as f:
    stdout = f.read()
  with open(err_path) as f:
    stderr = f.read()
  return {'code': os.waitstatus_to_exitcode(status), 'stdout': stdout,
          'stderr': stderr}


def main() -> None:
  cases_path, out_path = sys.argv[1:3]
  with open(cases_path) as f:
    cases = json.load(f)
  with tempfile.TemporaryDirectory() as scratch:
    results = [run_case(argv, scratch) for argv in cases]
  with open(out_path, 'w') as f:
    json.dump(results, f)


if __name__ == '__main__':
  main()
