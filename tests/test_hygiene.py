"""Repository hygiene: benchmarks and scripts never import from tests/."""

import ast
import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _imports(path):
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      yield node.module


def test_benchmarks_and_scripts_never_import_from_tests():
  for path in glob.glob(os.path.join(ROOT, 'benchmarks', '*.py')) + glob.glob(
      os.path.join(ROOT, 'scripts', '*.py')):
    bad = [m for m in _imports(path) if m == 'tests' or
           m.startswith('tests.')]
    assert not bad, (os.path.relpath(path, ROOT), bad)

