"""benchmarks/all.py: runs scripts in subprocesses, reads their ratios into
one table, and reports a script that lacks a module as skipped (not a crash).

Uses stand-in scripts (plain Python, no JAX) so it takes a second or two;
the real benchmarks are run by hand (`python benchmarks/all.py --out=DIR`).
"""

import importlib.util
import json
import os

import pytest

_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                     'benchmarks', 'all.py')
_spec = importlib.util.spec_from_file_location('benchmarks_all', _PATH)
bench_all = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_all)

SCRIPTS = {
    'fine': "print('| | comparison | ratio | goal | detail |')\n"
            "print('|---|---|---|---|---|')\n"
            "print('| a | x / y | 2.50 | >= 2 | 3 ms |')\n"
            "print('ratio 1.25')\n",
    'nomodule': 'import surely_not_installed_module_xyz\n',
    'broken': "raise SystemExit('bad input')\n",
}


@pytest.fixture
def scripts(tmp_path):
  folder = tmp_path / 'scripts'
  folder.mkdir()
  for name, text in SCRIPTS.items():
    (folder / f'{name}.py').write_text(text)
  both = lambda t: (bench_all.markdown_rows(t, 'ratio', ('', 'comparison'))
                    + bench_all.ratio_lines(t))
  benches = tuple(bench_all.Benchmark(n, ('--quick',), both)
                  for n in SCRIPTS)
  return str(folder), benches


def test_table_of_ratios_and_skipped_script(tmp_path, scripts):
  folder, benches = scripts
  out = tmp_path / 'out'
  records = bench_all.main([f'--out={out}'], benchmarks=benches,
                           script_dir=folder)
  status = {r['name']: r['status'] for r in records}
  assert status['fine'] == 'ok'
  assert status['nomodule'] == ('skipped: surely_not_installed_module_xyz '
                                'is not installed')
  assert status['broken'].startswith('failed (exit 1)')
  fine = next(r for r in records if r['name'] == 'fine')
  assert [(r['comparison'], r['ratio']) for r in fine['rows']] == [
      ('a x / y', '2.50'), ('ratio', '1.25')]
  saved = json.loads((out / 'results.json').read_text())
  assert [b['name'] for b in saved['benchmarks']] == list(SCRIPTS)
  md = (out / 'results.md').read_text()
  assert '| fine | a x / y | 2.50 | >= 2 | 3 ms |' in md
  assert 'surely_not_installed_module_xyz' in md
  assert (out / 'logs' / 'fine.log').read_text().count('ratio 1.25') == 1


def test_unknown_name_is_refused(tmp_path, scripts, capsys):
  folder, benches = scripts
  with pytest.raises(SystemExit) as e:
    bench_all.main([f'--out={tmp_path}', '--only=nope'], benchmarks=benches,
                   script_dir=folder)
  assert e.value.code == 2
  assert '--only=nope: unknown benchmark' in capsys.readouterr().err


def test_parsers_read_the_real_formats():
  corr = ('pixelate                2008.0     1618.0      1.2x       3.6    32\n'
          'geometric mean speed-up: 11.1x; slowest: pixelate (1.24x)\n')
  assert [r[:2] for r in bench_all.parse_corruptions(corr)] == [
      ('pixelate: ours / imagecorruptions images/s', '1.2'),
      ('geometric mean over the corruptions', '11.1')]
  fwd = ('\nresnet18\n  ours[default]             29.2 img/s  ours/NCHW 0.83'
         '  ours/CL 0.67  compile 3.0s  logit rel. diff 1e-06\n'
         '  timm NCHW                 35.1 img/s\n')
  assert [r[:2] for r in bench_all.parse_forward(fwd)] == [
      ('resnet18 ours[default] / timm NCHW images/s', '0.83')]
  sysm = ('method           host ms   ours ms   ratio \n'
          'pil_bilinear        12.0       3.0    4.00      4.0    3.00\n'
          'all 11             100.0      20.0    5.00\n'
          'ratio = host time / our time (> 1: the device emulation is faster).')
  assert [r[1] for r in bench_all.parse_systematic(sysm)] == ['4.00', '5.00']
  proj = ('ImageNet-C grid (50,000 x 15 x 5) on one device: generation 6.5 '
          'min, + resnet18 fp32 forward 2.3 min = 8.8 min\n'
          'total 1,772 device-hours (gpu, 1 device(s))\n')
  assert [r[1:3] for r in bench_all.parse_projection(proj)] == [
      ('8.8', '< 10 (GPU)'), ('1,772', '')]
  kernels = next(b for b in bench_all.BENCHMARKS if b.name == 'cpu_kernels')
  table = ('| model | precision | program | default ms | eigen_convs ms | '
           'eigen ms | eigen_convs speed-up | eigen speed-up |\n'
           '|---|---|---|---|---|---|---|---|\n'
           '| resnet20_cifar | w4a4 | forward | 99.1 | 59.3 | 58.7 | 1.67x | '
           '1.69x |\n')
  assert [r[:2] for r in kernels.parse(table)] == [
      ('resnet20_cifar w4a4 forward', '1.67x')]
