#!/usr/bin/env bash
# The GPU figures of benchmarks/RESULTS.md in one call of the device tool,
# after `bash benchmarks/device_wheels.sh` here:
#
#   run(command='bash benchmarks/device_run.sh', carry=['.whl'],
#       timeout_s=600)
#
# Installs the carried wheels when the packages are missing, then runs, each
# under its own time limit (together under 9 minutes): attacks and
# corruptions (benchmarks/all.py, quick settings: PGD-20 vs torchattacks and
# foolbox on the same GPU, the 19 corruptions vs imagecorruptions), the
# 11-resize emulation vs the host libraries (systematic.py, its defaults)
# and the projection on one device (projection.py at batch 64 for ResNet-18
# from float rates, PIL and OpenCV decoders: its "ImageNet-C grid"
# line is the one-device figure). Every file is written into $OUT (default
# /tmp/device_out) as it is produced, so a run cut short still brings back
# what finished: machine.txt, systematic.log, projection.log and bench/
# (results.md, results.json, logs/attacks.log, logs/corruptions.log), at
# most the 8 files a device call returns. Also runs on a CPU host where the
# packages are installed, which is how it was tested; PROJECTION_ARGS
# overrides the projection's arguments.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/device_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# The repository's package for every script (systematic.py does not add it
# itself, and the device has no install of it).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# foolbox imports GitPython, which fails at import without a git program.
export GIT_PYTHON_REFRESH=quiet
# Found, not imported: imagecorruptions needs our NumPy 2 / pkg_resources
# patch (robustmq_jax/testing/imagecorruptions_compat.py) to import.
need='import importlib.util as u; assert all(u.find_spec(m) for m in ("aqt",
"dm_pix", "chex", "ml_collections", "torchattacks", "imagecorruptions",
"foolbox", "requests", "simplejpeg"))'
if ! python3 -c "$need" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
{
  date -u
  nvidia-smi -L 2>/dev/null || echo 'no nvidia-smi'
  python3 -c 'import jax, torch; print("jax", jax.__version__, jax.devices());
print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
  python3 -c 'import aqt.jax.v2.flax.aqt_flax, dm_pix, foolbox, torchattacks
import robustmq_jax.corruptions, robustmq_jax.cli' &&
    echo 'aqt, dm_pix, foolbox, torchattacks and robustmq_jax import'
} > "$OUT/machine.txt" 2>&1
timeout 300 python3 benchmarks/all.py --out="$OUT/bench" \
  --only=attacks,corruptions --timeout_s=140
timeout 60 python3 benchmarks/systematic.py > "$OUT/systematic.log" 2>&1
timeout 150 python3 benchmarks/projection.py ${PROJECTION_ARGS:---batch=64 \
  --iters=3 --models=resnet18 --noquantized --decoders=pil,opencv} \
  > "$OUT/projection.log" 2>&1
ls -laR "$OUT"
