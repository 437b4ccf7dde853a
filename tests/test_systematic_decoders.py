"""Named decoders on the sample's JPEGs and on real photographs.

Reference: PIL (`Image.open(...).convert('RGB')`). Every available decoder
must decode every file to the same shape, and differ from PIL by the small
amounts JPEG decoders differ by (IDCT variant, chroma upsampling, colour
conversion): mean absolute difference at most 3 levels per file.
"""

import io
import os

import numpy as np
import pytest
from PIL import Image

from robustmq_jax import systematic
from robustmq_jax.data.sample import SampleDataset
from robustmq_jax.errors import UserError

skimage = pytest.importorskip('skimage')


def _files() -> dict[str, bytes]:
  data = os.path.join(os.path.dirname(skimage.__file__), 'data')
  files = {}
  for f in ('rocket.jpg', 'retina.jpg', 'hubble_deep_field.jpg'):
    with open(os.path.join(data, f), 'rb') as fh:
      files[f] = fh.read()
  for f, sub in (('chelsea.png', 2), ('coffee.png', 0), ('camera.png', 2)):
    img = Image.open(os.path.join(data, f))
    buf = io.BytesIO()
    img.save(buf, 'JPEG', quality=90, subsampling=sub)  # 4:2:0 / 4:4:4 / gray
    files[f'{f}.jpg(sub={sub})'] = buf.getvalue()
  ds = SampleDataset('test')
  for i in (0, 1, 2):
    files[f'sample[{i}]'] = ds.jpeg_bytes(i)
  return files


def test_list_decoders_names_every_decoder_with_a_reason():
  infos = systematic.list_decoders()
  assert [d.name for d in infos] == list(systematic.DECODERS)
  by_name = {d.name: d for d in infos}
  assert by_name['pil'].available and 'Pillow' in by_name['pil'].library
  for d in infos:
    assert d.available or d.reason, d


def test_available_decoders_agree_with_pil():
  files = _files()
  mads = {}
  for name in systematic.available_decoders():
    for f, data in files.items():
      ref = systematic.decode(data, decoder='pil')
      out = systematic.decode(data, decoder=name)
      assert out.dtype == np.uint8 and out.shape == ref.shape, (name, f)
      mads[(name, f)] = float(np.abs(out.astype(int) - ref).mean())
  for (name, f), mad in sorted(mads.items()):
    print(f'MAD vs pil: {name:24s} {f:28s} {mad:.3f}')
    assert mad <= 3.0, (name, f, mad)
  assert all(mads[('pil', f)] == 0 for f in files)


def test_decode_many_marks_failures_and_keeps_order():
  good = _files()['sample[0]']
  for name in systematic.available_decoders():
    out = systematic.decode_many([good, b'not an image', good],
                                 decoder=name)
    assert out[1] is None, name
    np.testing.assert_array_equal(out[0], out[2])
    with pytest.raises(systematic.DecodeError):
      systematic.decode(b'not an image', decoder=name)


def test_unknown_and_unavailable_decoders():
  with pytest.raises(UserError, match='decoder'):
    systematic.decode(b'', decoder='libjpeg9000')
  missing = [d.name for d in systematic.list_decoders() if not d.available]
  for name in missing:
    with pytest.raises(systematic.DecoderUnavailable, match=name):
      systematic.decode(b'', decoder=name)


def test_ffmpeg_decodes_a_batch_in_one_process(monkeypatch):
  if 'ffmpeg' not in systematic.available_decoders():
    pytest.skip('no ffmpeg')
  from robustmq_jax.systematic import decoders  # pylint: disable=g-import-not-at-top
  ds = SampleDataset('test')
  jpegs = [ds.jpeg_bytes(i) for i in range(6)]
  buf = io.BytesIO()
  Image.fromarray(systematic.decode(jpegs[0], decoder='pil')).save(buf, 'PNG')
  datas = jpegs + [buf.getvalue(), buf.getvalue()]
  one_by_one = [systematic.decode(d, decoder='ffmpeg') for d in datas]
  runs = []
  real_run = decoders.subprocess.run

  def counting_run(cmd, **kw):
    runs.append(cmd)
    return real_run(cmd, **kw)

  monkeypatch.setattr(decoders.subprocess, 'run', counting_run)
  batch = systematic.decode_many(datas, decoder='ffmpeg')
  # One process per (size, format): the six JPEGs, then the two PNGs. A
  # stream of JPEGs that FFmpeg rejected would be retried file by file.
  assert len(runs) == 2, runs
  for got, want in zip(batch, one_by_one):
    np.testing.assert_array_equal(got, want)
