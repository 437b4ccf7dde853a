r"""The main job's cost does not grow with the training split.

  python benchmarks/train_split.py [--small=600 --large=6000 --repeats=2]

Makes a fake-ImageNet validation folder and two training folders of
`--small` and `--large` full-size JPEGs (scripts/make_fake_imagenet.py; the
large tree holds the small tree's images hard-linked under new names, so
only `--small` images are encoded: listing and sampling see `--large`
distinct files, and a file read costs the same as an original's), writes a
random-init ResNet-18 checkpoint, then runs the main job on each training
folder in a subprocess, alternating, `--repeats` times:

  python -m robustmq_jax.main --config=configs/resnet18_w4.py \
      --config.precisions=fp32,w8a8 --config.suites=clean \
      --config.data.source=folder:VAL --config.data.train_source=folder:TRAIN \
      --config.quant.method=ptq ...

(w8a8 PTQ calibrates on 256 images drawn from the training split.) Prints
each run's peak RSS (the child's ru_maxrss, from wait4) and wall time, the
smallest of each per tree, their difference and ratio; the issue's goal is
< 100 MB and < 20 %. The compilation cache is off so that every run compiles
the same programs.
"""

import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

_SMALL = flags.DEFINE_integer('small', 600, 'Training images, small tree.')
_LARGE = flags.DEFINE_integer('large', 6000, 'Training images, large tree.')
_CLASSES = flags.DEFINE_integer('classes', 10, 'Classes of the fake data.')
_VAL = flags.DEFINE_integer('val_per_class', 4, 'Validation images per class.')
_REPEATS = flags.DEFINE_integer('repeats', 2, 'Runs per tree (alternating).')
_KEEP = flags.DEFINE_string('root', '', 'Keep the trees here (default: a '
                            'temporary folder, deleted).')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _make_trees(root: str, classes: int, small: int, large: int,
                val_per_class: int) -> tuple[str, str, str]:
  """(val, small train, large train) folders under `root`."""
  small_dir = os.path.join(root, 'small')
  if not os.path.isdir(os.path.join(small_dir, 'train')):
    subprocess.run([sys.executable, 'scripts/make_fake_imagenet.py',
                    f'--out={small_dir}', f'--classes={classes}',
                    f'--train_per_class={small // classes}',
                    f'--val_per_class={val_per_class}', '--noarray_record'],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
  large_train = os.path.join(root, 'large_train')
  copies = -(-large // small)
  for synset in sorted(os.listdir(os.path.join(small_dir, 'train'))):
    src = os.path.join(small_dir, 'train', synset)
    dst = os.path.join(large_train, synset)
    os.makedirs(dst, exist_ok=True)
    names = sorted(os.listdir(src))
    for c in range(copies):
      for n in names[:max(0, large // classes - c * len(names))]:
        target = os.path.join(dst, f'c{c:02d}_{n}')
        if not os.path.exists(target):
          os.link(os.path.join(src, n), target)
  return (os.path.join(small_dir, 'val'), os.path.join(small_dir, 'train'),
          large_train)


def _count(folder: str) -> int:
  return sum(len(files) for _, _, files in os.walk(folder))


def _checkpoint(root: str) -> str:
  """A random-init ResNet-18 (1000 classes) in our checkpoint format."""
  out = os.path.join(root, 'resnet18_random')
  if not os.path.exists(os.path.join(out, 'model.json')):
    code = (
        'from robustmq_jax import checkpoints, models\n'
        'from robustmq_jax.models import random_init\n'
        "m = models.get_model('resnet18', num_classes=1000)\n"
        'v = random_init.he_normal_variables(m, 224)\n'
        f"checkpoints.save({out!r}, model='resnet18', num_classes=1000, "
        'variables=v)\n')
    subprocess.run([sys.executable, '-c', code], check=True, cwd=ROOT)
  return out


def run_main(val: str, train: str, ckpt: str) -> tuple[float, float]:
  """One main-job run: (peak RSS in MiB, wall seconds)."""
  with tempfile.TemporaryDirectory() as workdir:
    cmd = [sys.executable, '-m', 'robustmq_jax.main',
           '--config=configs/resnet18_w4.py', f'--workdir={workdir}',
           '--compilation_cache=off', '--config.precisions=fp32,w8a8',
           '--config.suites=clean', f'--config.data.source=folder:{val}',
           f'--config.data.train_source=folder:{train}',
           '--config.data.num_examples=32', '--config.batch_size=32',
           '--config.quant.method=ptq', "--config.quant.checkpoint_dir=",
           f'--config.checkpoints.resnet18={ckpt}']
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors='replace')
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status):
      raise SystemExit(f'main job failed: {err[-3000:]}')
    return usage.ru_maxrss / 1024, wall  # Linux: ru_maxrss in KiB.


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as tmp:
    root = _KEEP.value or tmp
    os.makedirs(root, exist_ok=True)
    val, small, large = _make_trees(root, _CLASSES.value, _SMALL.value,
                                    _LARGE.value, _VAL.value)
    ckpt = _checkpoint(root)
    trees = {'small': (small, _count(small)), 'large': (large, _count(large))}
    runs = {k: [] for k in trees}
    for r in range(_REPEATS.value):
      for name, (folder, n) in trees.items():
        rss, wall = run_main(val, folder, ckpt)
        runs[name].append((rss, wall))
        print(f'run {r + 1} {name} ({n} training images): peak RSS '
              f'{rss:.0f} MiB, wall {wall:.1f} s', flush=True)
  best = {k: (min(x[0] for x in v), min(x[1] for x in v))
          for k, v in runs.items()}
  print('| training images | peak RSS (MiB, min) | wall (s, min) |')
  print('|---|---|---|')
  for name, (_, n) in trees.items():
    print(f'| {n} | {best[name][0]:.0f} | {best[name][1]:.1f} |')
  d_rss = best['large'][0] - best['small'][0]
  ratio = best['large'][1] / best['small'][1]
  print(f'peak RSS difference {d_rss:+.0f} MiB (goal < 100 MB); '
        f'wall ratio {ratio:.3f} (goal within 20 %)')
  print(f'ratio {ratio:.3f}')


if __name__ == '__main__':
  if not hasattr(os, 'wait4'):
    sys.exit('benchmarks/train_split.py needs os.wait4 (Linux/macOS).')
  app.run(main)
