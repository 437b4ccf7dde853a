r"""Builds the embedded sample: scikit-learn digits as 32x32 RGB JPEGs.

The 1797 8x8 greyscale digits (Alpaydin & Kaynak, UCI; shipped with
scikit-learn, BSD-3-Clause licence) are upscaled to 32x32 with PIL bicubic,
tinted with a per-image foreground/background colour pair (so colour
corruptions and decoders' chroma handling matter), JPEG-encoded at quality 90
with 4:2:0 subsampling and stored with a fixed, stratified 80/20 train/test
split. The file holds only numeric arrays (no pickle):

  data     uint8 [total_bytes]  all JPEG files concatenated
  offsets  int64 [N + 1]        file i is data[offsets[i]:offsets[i + 1]]
  label    int32 [N]
  split    uint8 [N]            0 = train, 1 = test

Usage:
  python scripts/make_sample.py  # rewrites robustmq_jax/data/sample_digits.npz
"""

import io
import os

import numpy as np
from PIL import Image
import sklearn.datasets

OUT = os.path.join(os.path.dirname(__file__), '..', 'robustmq_jax', 'data',
                   'sample_digits.npz')
SEED = 20230804  # RobustMQ's arXiv date; any fixed value works.
SIZE = 32
QUALITY = 90


def main():
  digits = sklearn.datasets.load_digits()
  images, labels = digits.images, digits.target.astype(np.int32)
  rng = np.random.default_rng(SEED)
  files = []
  for img in images:
    grey = Image.fromarray((img / 16.0 * 255.0).round().astype(np.uint8))
    grey = np.asarray(grey.resize((SIZE, SIZE), Image.Resampling.BICUBIC),
                      np.float32)[..., None] / 255.0
    fg = rng.uniform(0.6, 1.0, size=3)
    bg = rng.uniform(0.0, 0.35, size=3)
    rgb = np.clip(bg + (fg - bg) * grey, 0, 1)
    buf = io.BytesIO()
    Image.fromarray((rgb * 255).round().astype(np.uint8)).save(
        buf, format='JPEG', quality=QUALITY, subsampling=2)
    files.append(buf.getvalue())
  # Stratified split: 20 % of each class goes to test.
  split = np.zeros(len(labels), np.uint8)
  for c in range(10):
    idx = np.flatnonzero(labels == c)
    test = rng.choice(idx, size=round(0.2 * len(idx)), replace=False)
    split[test] = 1
  offsets = np.concatenate([[0], np.cumsum([len(f) for f in files])])
  np.savez_compressed(
      OUT, data=np.frombuffer(b''.join(files), np.uint8),
      offsets=offsets.astype(np.int64), label=labels, split=split)
  print(f'wrote {OUT}: {len(files)} images, {(split == 1).sum()} test, '
        f'{os.path.getsize(OUT) / 1024:.0f} KiB')


if __name__ == '__main__':
  main()
