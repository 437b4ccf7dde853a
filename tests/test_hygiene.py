"""Repository hygiene: benchmarks and scripts never import from tests/."""

import ast
import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_MODULES = {os.path.splitext(os.path.basename(p))[0]
                for p in glob.glob(os.path.join(ROOT, 'tests', '*.py'))}


def _imports(path):
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      yield node.module


def _strings(path):
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
      yield node.value


def _sources():
  return glob.glob(os.path.join(ROOT, 'benchmarks', '*.py')) + glob.glob(
      os.path.join(ROOT, 'scripts', '*.py'))


def test_benchmarks_and_scripts_never_import_from_tests():
  for path in _sources():
    bad = [m for m in _imports(path) if m == 'tests' or
           m.startswith('tests.') or m.split('.')[0] in TEST_MODULES]
    assert not bad, (os.path.relpath(path, ROOT), bad)


def test_benchmarks_and_scripts_never_put_tests_on_the_path():
  # `sys.path.insert(0, '.../tests')` then a bare import hides the
  # dependency from the import check above.
  for path in _sources():
    bad = [s for s in _strings(path) if s.strip('/') == 'tests']
    assert not bad, (os.path.relpath(path, ROOT), bad)


def test_the_checks_see_what_they_look_for(tmp_path):
  # The checks would pass vacuously if the parsers found nothing.
  probe = tmp_path / 'probe.py'
  probe.write_text("import os, sys\nsys.path.insert(0, os.path.join("
                   "'..', 'tests'))\nimport fakes\nfrom tests import x\n")
  assert {'fakes', 'tests'} <= set(_imports(str(probe)))
  assert 'fakes' in TEST_MODULES
  assert 'tests' in set(_strings(str(probe)))
