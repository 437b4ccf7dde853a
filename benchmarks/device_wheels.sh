#!/usr/bin/env bash
# Wheels for benchmarks/device_run.sh, downloaded here (with network) into
# .whl/ (ignored by git) for the device machine's Python 3.12, which has no
# network and lacks these packages (its image has JAX, flax, optax, orbax,
# torch, timm, OpenCV, scikit-image, statsmodels, ...). --no-deps: each
# needed dependency is named; the versions are those the CPU tests use.
# chex (for dm-pix) and requests (for foolbox) are named too: a Python 3.12
# environment with only JAX, flax, optax, orbax, torch and timm lacks both
# (today's optax and huggingface_hub no longer pull them in).
# imageio-ffmpeg (68 MB, over the device call's 64 MiB) is left out: the
# device run projects the systematic suite over the PIL and OpenCV decoders.
# Grain and array-record are left out too: none of the four scripts the
# device run calls imports them (the main job's ImageNet pipeline does).
#
#   bash benchmarks/device_wheels.sh    # 18 wheels, ~6 MB
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download -q --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d .whl \
  aqtp==0.9.0 dm-pix==0.4.5 ml-collections==1.1.0 \
  torchattacks==3.5.1 imagecorruptions==1.1.2 simplejpeg==1.9.0 \
  foolbox==3.3.4 eagerpy==0.30.0 GitPython==3.2.1 gitdb==4.0.12 smmap==5.0.3 \
  chex==0.1.92 toolz==1.2.0 \
  requests==2.34.2 urllib3==2.7.0 certifi==2026.5.20 idna==3.21 \
  charset-normalizer==3.4.7
du -sh .whl
