"""Named JPEG decoders: the host half of the systematic-noise pipeline.

Each decoder turns the raw bytes of a file into a uint8 RGB [H, W, 3]
array with one library's default behaviour, as a deployed pipeline would:

* ``pil``: `PIL.Image.open(...).convert('RGB')`, the reference
  (libjpeg-turbo: accurate integer IDCT, fancy upsampling).
* ``opencv``: `cv2.imdecode(..., IMREAD_COLOR)` then BGR -> RGB (OpenCV's
  bundled libjpeg-turbo; applies the EXIF orientation, as OpenCV does).
* ``ffmpeg``: FFmpeg's own MJPEG decoder and swscale conversion to rgb24
  (the binary shipped in the `imageio-ffmpeg` wheel, else `ffmpeg` on PATH);
  same-sized files share one process.
* ``simplejpeg``, ``simplejpeg_fastdct``, ``simplejpeg_fastupsample``,
  ``simplejpeg_fast``: libjpeg-turbo through `simplejpeg`, with its fast-DCT
  and fast-upsampling flags.
* ``tf``, ``tf_integer_fast``, ``tf_integer_accurate`` and their
  ``_nofancy`` twins: `tf.io.decode_jpeg` with `dct_method` '' (the system
  default), 'INTEGER_FAST' or 'INTEGER_ACCURATE', `fancy_upscaling` True or
  False (needs TensorFlow).

A decoder whose library is missing is listed by `list_decoders` with the
reason and raises `DecoderUnavailable` when used; it is never replaced by
another one.
"""

import dataclasses
import functools
import io
import shutil
import subprocess
from typing import Callable, Sequence

import numpy as np

from robustmq_jax.errors import invalid
from robustmq_jax.errors import UserError

REFERENCE_DECODER = 'pil'
_TF_DCT = {'': '', '_integer_fast': 'INTEGER_FAST',
           '_integer_accurate': 'INTEGER_ACCURATE'}
_SIMPLEJPEG = {'': (False, False), '_fastdct': (True, False),
               '_fastupsample': (False, True), '_fast': (True, True)}
DECODERS = (('pil', 'opencv', 'ffmpeg') +
            tuple(f'simplejpeg{s}' for s in _SIMPLEJPEG) +
            tuple(f'tf{d}{f}' for f in ('', '_nofancy') for d in _TF_DCT))


class DecoderUnavailable(UserError):
  """The decoder's library is not installed."""


class DecodeError(ValueError):
  """The library could not decode these bytes."""


@dataclasses.dataclass(frozen=True)
class DecoderInfo:
  """A named decoder and whether this machine has it.

  Attributes:
    name: the decoder name (`DECODERS`).
    library: library and version, e.g. 'Pillow 13.0.0 (libjpeg-turbo
      3.2.0)'; '' when unavailable.
    available: whether `decode` works here.
    reason: why not (empty when available).
  """
  name: str
  library: str
  available: bool
  reason: str = ''


# ---------------------------------------------------------------- libraries
@functools.cache
def _pil():
  from PIL import features  # pylint: disable=g-import-not-at-top
  import PIL  # pylint: disable=g-import-not-at-top
  turbo = features.version('libjpeg_turbo') or features.version('jpg')
  return f'Pillow {PIL.__version__} (libjpeg-turbo {turbo})'


@functools.cache
def _cv2():
  import cv2  # pylint: disable=g-import-not-at-top
  return f'opencv-python {cv2.__version__}'


@functools.cache
def _ffmpeg_exe() -> str:
  try:
    import imageio_ffmpeg  # pylint: disable=g-import-not-at-top
    return imageio_ffmpeg.get_ffmpeg_exe()
  except (ImportError, RuntimeError):
    exe = shutil.which('ffmpeg')
    if exe:
      return exe
    raise ImportError('no ffmpeg binary: install imageio-ffmpeg (ships one) '
                      'or put ffmpeg on PATH') from None


@functools.cache
def _ffmpeg():
  out = subprocess.run([_ffmpeg_exe(), '-version'], capture_output=True,
                       check=True, text=True).stdout
  return out.splitlines()[0].split(' Copyright')[0] if out else 'ffmpeg'


@functools.cache
def _simplejpeg():
  import simplejpeg  # pylint: disable=g-import-not-at-top
  return f'simplejpeg {simplejpeg.__version__}'


@functools.cache
def _tf():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return f'tensorflow {tf.__version__}'


def _library_check(name: str) -> Callable[[], str]:
  if name == 'pil':
    return _pil
  if name == 'opencv':
    return _cv2
  if name == 'ffmpeg':
    return _ffmpeg
  if name.startswith('simplejpeg'):
    return _simplejpeg
  return _tf


@functools.cache
def _info(name: str) -> DecoderInfo:
  try:
    return DecoderInfo(name, _library_check(name)(), True)
  except (ImportError, OSError, subprocess.SubprocessError) as e:
    module = getattr(e, 'name', None)
    reason = f'{module} is not installed' if module else str(e)
    return DecoderInfo(name, '', False, reason)


def list_decoders() -> list[DecoderInfo]:
  """Every named decoder, with availability and the reason when missing."""
  return [_info(n) for n in DECODERS]


def available_decoders() -> list[str]:
  return [d.name for d in list_decoders() if d.available]


def check_decoder(name: str, field: str = 'decoder') -> None:
  """Raises UserError for an unknown name, DecoderUnavailable if missing."""
  if name not in DECODERS:
    raise invalid(field, name, DECODERS)
  info = _info(name)
  if not info.available:
    raise DecoderUnavailable(f'{field}={name!r} is not available here: '
                             f'{info.reason}.')


# ----------------------------------------------------------------- decoding
def _rgb(a: np.ndarray) -> np.ndarray:
  a = np.asarray(a, np.uint8)
  if a.ndim == 2:
    a = np.repeat(a[:, :, None], 3, axis=2)
  return np.ascontiguousarray(a)


def _decode_pil(data: bytes) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(io.BytesIO(data)) as img:
    return _rgb(img.convert('RGB'))


def _decode_cv2(data: bytes) -> np.ndarray:
  import cv2  # pylint: disable=g-import-not-at-top
  bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  if bgr is None:
    raise DecodeError('cv2.imdecode returned None')
  return _rgb(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def _decode_simplejpeg(data: bytes, fastdct: bool, fastupsample: bool):
  import simplejpeg  # pylint: disable=g-import-not-at-top
  return _rgb(simplejpeg.decode_jpeg(data, colorspace='RGB', fastdct=fastdct,
                                     fastupsample=fastupsample))


def _decode_tf(data: bytes, dct: str, fancy: bool) -> np.ndarray:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return _rgb(tf.io.decode_jpeg(data, channels=3, dct_method=dct,
                                fancy_upscaling=fancy).numpy())


def _header_size(data: bytes) -> tuple[int, int]:
  """(height, width) from the file header (no decode)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(io.BytesIO(data)) as img:
    return img.size[1], img.size[0]


# FFmpeg's decoder per file signature. Named, because FFmpeg's image2pipe
# demuxer does not probe a stream of several files: without `-c:v` a pipe of
# two or more JPEGs fails ("Output file does not contain any stream").
_FFMPEG_CODECS = ((b'\xff\xd8', 'mjpeg'), (b'\x89PNG', 'png'))


def _ffmpeg_codec(data: bytes) -> str | None:
  for magic, codec in _FFMPEG_CODECS:
    if data.startswith(magic):
      return codec
  return None


def _ffmpeg_run(datas: Sequence[bytes], h: int, w: int,
                codec: str | None) -> list[np.ndarray]:
  """Decodes same-size images piped as one stream, frames out as rgb24."""
  cmd = [_ffmpeg_exe(), '-loglevel', 'error', '-f', 'image2pipe']
  if codec:
    cmd += ['-c:v', codec]
  cmd += ['-i', 'pipe:', '-f', 'rawvideo', '-pix_fmt', 'rgb24', 'pipe:']
  r = subprocess.run(cmd, input=b''.join(datas), capture_output=True,
                     check=False)
  frame = h * w * 3
  if r.returncode or len(r.stdout) != frame * len(datas):
    raise DecodeError(f'ffmpeg: {r.stderr.decode(errors="replace")[:200]}')
  out = np.frombuffer(r.stdout, np.uint8).reshape(len(datas), h, w, 3)
  return list(out.copy())


def _decode_ffmpeg_many(datas: Sequence[bytes]) -> list[np.ndarray | None]:
  out: list[np.ndarray | None] = [None] * len(datas)
  groups: dict[tuple[int, int, str | None], list[int]] = {}
  for i, d in enumerate(datas):
    try:
      groups.setdefault(_header_size(d) + (_ffmpeg_codec(d),), []).append(i)
    except Exception:  # pylint: disable=broad-except
      pass  # unreadable header: stays None (a decode failure)
  for (h, w, codec), idx in groups.items():
    try:
      frames = _ffmpeg_run([datas[i] for i in idx], h, w, codec)
    except DecodeError:
      if len(idx) == 1:
        continue
      frames = []
      for i in idx:  # isolate the bad file
        try:
          frames.append(_ffmpeg_run([datas[i]], h, w, codec)[0])
        except DecodeError:
          frames.append(None)
    for i, f in zip(idx, frames):
      out[i] = f
  return out


def _decode_one(data: bytes, decoder: str) -> np.ndarray:
  if decoder == 'pil':
    return _decode_pil(data)
  if decoder == 'opencv':
    return _decode_cv2(data)
  if decoder == 'ffmpeg':
    frame = _decode_ffmpeg_many([data])[0]
    if frame is None:
      raise DecodeError('ffmpeg could not decode the bytes')
    return frame
  if decoder.startswith('simplejpeg'):
    return _decode_simplejpeg(data, *_SIMPLEJPEG[decoder[10:]])
  rest = decoder[2:]
  fancy = not rest.endswith('_nofancy')
  return _decode_tf(data, _TF_DCT[rest.removesuffix('_nofancy')], fancy)


def decode(jpeg_bytes: bytes, *, decoder: str) -> np.ndarray:
  """Decodes an encoded image with the named library.

  Args:
    jpeg_bytes: the raw file (JPEG; PIL, OpenCV and FFmpeg also read PNG).
    decoder: one of `DECODERS` ('pil', 'opencv', 'ffmpeg', 'simplejpeg',
      ..., 'tf_integer_fast_nofancy').

  Returns:
    uint8 RGB [H, W, 3].

  Raises:
    UserError: unknown decoder name.
    DecoderUnavailable: the library is not installed.
    DecodeError: the library failed on these bytes.
  """
  check_decoder(decoder)
  try:
    return _decode_one(jpeg_bytes, decoder)
  except DecodeError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise DecodeError(f'{decoder}: {e}') from e


def decode_many(datas: Sequence[bytes], *,
                decoder: str) -> list[np.ndarray | None]:
  """Decodes several files; None where the library fails on one.

  FFmpeg decodes files of the same size and format in one process (one
  start per size and format; a group with a bad file is decoded file by
  file).
  """
  check_decoder(decoder)
  if decoder == 'ffmpeg':
    return _decode_ffmpeg_many(datas)
  out = []
  for d in datas:
    try:
      out.append(_decode_one(d, decoder))
    except Exception:  # pylint: disable=broad-except
      out.append(None)
  return out
