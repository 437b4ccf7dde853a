r"""RobustMQ (Xiao et al., arXiv 2308.02350): the paper's whole grid.

ResNet-18, ResNet-50, RegNetX-600MF and MobileNetV2, each in float and
quantized with DoReFa, PACT and LSQ at W/A 2, 4, 6 and 8 bits (MQBench
academic setting, BatchNorm folded: `quant.default_config('robustmq')`),
under four suites: clean; adversarial (FGSM, PGD L-inf / L2 / L1,
AutoAttack); natural corruptions (the 15 ImageNet-C benchmark corruptions x
5 severities); systematic noise (3 JPEG decoders x 11 resize methods).
Each quantized precision names its method ('w4a4:pact', see
robustmq_jax/precision.py), so every row of the grid carries its method:
4 models x (fp32 + 3 methods x 4 bit widths) = 52 model rows. The QAT models
are fine-tuned by the run from the float checkpoints (recipe
config.quant.qat) and cached in <workdir>/cache/quant/; a rerun reuses them.
The report has one table per architecture in the paper's layout
(robustmq_jax/reporting/paper_tables.py).

ImageNet (the default; float checkpoints converted into
checkpoints/imagenet/<model>/fp32, see checkpoints/README.md):
  python -m robustmq_jax.main --config=configs/robustmq.py \
      --workdir=/tmp/robustmq_paper --config.data.data_dir=$TFDS_DATA_DIR

Expected cost (ESTIMATES, not measurements of this grid): 52 model rows,
6,500 cells, per quantized row ~25 M forward and ~10 M input-gradient
passes in the worst case (benchmarks/RESULTS.md, "The paper's grid on
ImageNet, projected"). `benchmarks/projection.py` measured the four models'
rates on the 2-core CPU and projects 85,000 hours there under load ~9.5
(about 8,500 on a quiet CPU; 412,000 if every AutoAttack stage runs on
every image): a CPU cannot run it. Device-hours: about 40 on one
H100-class GPU (order 30-80), assuming 2,500-6,000 fake-quant images/s
(ResNet-50 slowest) and AutoAttack's later stages on few images; not yet
measured (no accelerator was lent): run
`python benchmarks/projection.py --config=configs/robustmq.py` on the
device to print its device-hours. Split it over hosts with
--config.grid_shard=I/N. QAT at the default recipe (200 steps x 64) adds
minutes per model; MQBench's own schedule (up to 250k iterations) would add
days.

Embedded sample (the 32x32 twins: resnet20_cifar for ResNet-18,
resnet29_bottleneck_cifar for ResNet-50, regnetx_cifar, mobilenet_v2_cifar;
the same methods x bits; suites at the sample's budgets):
  python -m robustmq_jax.main --config=configs/robustmq.py:sample \
      --workdir=/tmp/robustmq_sample
  (6,396 cells; all 48 QAT models are shipped in checkpoints/sample/, so
  nothing is fine-tuned. On the 2-core CPU: 2 h 27 min of walls, 21-54 min
  per twin; 1 h 29 min elapsed as two processes, each with its own
  --config.models=M and workdir, merged by scripts/make_report.py:
  benchmarks/RESULTS.md. At one bit width the three methods share their
  compiled programs through the compilation cache.)
One model within the quickstart's budget (ResNet-20, fp32 and the three
methods at w4a4, all shipped in checkpoints/sample/):
  python -m robustmq_jax.main --config=configs/robustmq.py:sample_quick \
      --workdir=/tmp/robustmq_quick

The sample keeps the quickstart's quantization preset
(`quant.default_config('sample')`: AdamW QAT, BatchNorm not folded) with the
method taken from each precision, so that the checkpoints shipped by
`python scripts/quantize_sample.py --method=M` match it; add
`--config.quant.bn_fold=True` for the paper's folding (every QAT model is
then fine-tuned by the run).
"""

from robustmq_jax import quant
from robustmq_jax import study
from robustmq_jax.errors import invalid

MODELS = ('resnet18', 'resnet50', 'regnetx_600mf', 'mobilenet_v2')
# The 32x32 twin of each ImageNet architecture (robustmq_jax.models).
SAMPLE_TWINS = {'resnet18': 'resnet20_cifar',
                'resnet50': 'resnet29_bottleneck_cifar',
                'regnetx_600mf': 'regnetx_cifar',
                'mobilenet_v2': 'mobilenet_v2_cifar'}
METHODS = ('dorefa', 'pact', 'lsq')
BITS = ('w2a2', 'w4a4', 'w6a6', 'w8a8')
ATTACKS = ('fgsm', 'pgd_linf', 'pgd_l2', 'pgd_l1', 'autoattack')
# The paper's three decoders (REFERENCE 5.2); the sample keeps its own three
# (PIL and OpenCV decode its JPEGs identically).
IMAGENET_DECODERS = ('pil', 'opencv', 'ffmpeg')
QUICK_MODEL = 'resnet20_cifar'
QUICK_BITS = ('w4a4',)
ARGS = {
    'imagenet': 'the paper grid, 4 models x (fp32 + 3 methods x 4 bits)',
    'sample': 'the same grid on the sample, the four 32x32 twins (hours)',
    'sample_quick': 'ResNet-20, fp32 + DoReFa/PACT/LSQ w4a4 (~5 CPU-min)',
}


def precisions(bits=BITS, methods=METHODS) -> tuple[str, ...]:
  """'fp32' then '<bits>:<method>', method by method, fewest bits first."""
  return ('fp32',) + tuple(f'{b}:{m}' for m in methods for b in bits)


def get_config(arg=None):
  arg = arg or 'imagenet'
  if arg not in ARGS:
    raise invalid('config arg', arg, tuple(ARGS))
  sample = arg != 'imagenet'
  c = study.study_config('sample' if sample else 'imagenet',
                         imagenet_model=MODELS[0],
                         sample_model=SAMPLE_TWINS[MODELS[0]],
                         imagenet_precisions=('fp32',))
  if sample:
    c.models = ((QUICK_MODEL,) if arg == 'sample_quick' else
                tuple(SAMPLE_TWINS[m] for m in MODELS))
    c.checkpoints = {m: f'checkpoints/sample/{m}/fp32' for m in c.models}
    c.checkpoint_hint = ('train it with `python scripts/train.py '
                         '--model=MODEL` (see checkpoints/README.md)')
  else:
    c.models = MODELS
    c.checkpoints = {m: f'checkpoints/imagenet/{m}/fp32' for m in MODELS}
    # The MQBench academic setting with BatchNorm folded.
    c.quant = quant.default_config('robustmq')
  c.precisions = precisions(QUICK_BITS if arg == 'sample_quick' else BITS)
  c.adversarial.attacks = ATTACKS
  c.corruption.names = ('benchmark',)
  c.corruption.severities = (1, 2, 3, 4, 5)
  if not sample:
    c.systematic.decoders = IMAGENET_DECODERS
  if arg == 'sample_quick':
    # Within the quickstart's five minutes: PGD through quantized
    # convolutions is the slow part on a CPU (benchmarks/RESULTS.md).
    c.adversarial.attacks = ('fgsm', 'pgd_linf')
    c.adversarial.linf_eps_255 = (1.0, 2.0)
    c.adversarial.num_examples = 32
  return c
