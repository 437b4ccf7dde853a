r"""Defenses for quantized models: float vs vanilla QAT vs DQ vs LAAQ.

Compares, at the same bits (w4a4, w2a2), the float model, vanilla
quantization-aware training (LSQ), Defensive Quantization (the same QAT plus
the orthogonality penalty; Lin, Gan, Han, ICLR 2019) and layer-wise
adversarial-aware quantization (after Song, Ranjan, Li, 2021: per-layer
clipping chosen by a Lipschitz-weighted error on a PGD-trained float model),
with LAAQ's starting point ('fp32:adv') and its uniform baseline
('adv_ptq') alongside. Precision suffixes name the method (see
robustmq_jax/defenses/settings.py); hyper-parameters are in
config.quant.dq / .laaq / .adv.

Embedded sample (shipped checkpoints in checkpoints/sample/):
  python -m robustmq_jax.main --config=configs/defenses.py:sample \
      --workdir=/tmp/robustmq_defenses
  (':sample_resnet' or ':sample_vit' for one model only.)

ImageNet (the default; ResNet-18 converted into checkpoints/imagenet/; DQ and
LAAQ are trained / selected by the run and cached):
  python -m robustmq_jax.main --config=configs/defenses.py:imagenet \
      --workdir=/tmp/defenses_imagenet --config.data.data_dir=$TFDS_DATA_DIR

Regenerate the shipped sample checkpoints:
  python scripts/train_defenses.py
"""

from robustmq_jax import study
from robustmq_jax.defenses import settings as defense_settings
from robustmq_jax.errors import invalid
from robustmq_jax.suites import amplification

SAMPLE_MODELS = {'sample': ('resnet20_cifar', 'vit_tiny_patch4_32'),
                 'sample_resnet': ('resnet20_cifar',),
                 'sample_vit': ('vit_tiny_patch4_32',)}
METHODS = ('ptq', 'lsq', 'dq', 'adv_ptq', 'laaq')
BITS = ('w4a4', 'w2a2')
ARGS = {
    'imagenet': 'ImageNet ResNet-18; DQ, LAAQ trained by the run (default)',
    'sample': 'embedded sample, ResNet-20 and small ViT (~1 h CPU)',
    'sample_resnet': 'embedded sample, ResNet-20 only',
    'sample_vit': 'embedded sample, small ViT only',
}


def get_config(arg=None):
  arg = arg or 'imagenet'
  if arg not in tuple(SAMPLE_MODELS) + ('imagenet',):
    raise invalid('config arg', arg, tuple(ARGS))
  sample = arg != 'imagenet'
  c = study.study_config(
      'sample' if sample else 'imagenet', imagenet_model='resnet18',
      sample_model='resnet20_cifar', imagenet_precisions=('fp32',))
  if sample:
    c.models = SAMPLE_MODELS[arg]
    c.checkpoints = {m: f'checkpoints/sample/{m}/fp32'
                     for m in SAMPLE_MODELS['sample']}
  c.precisions = ('fp32', 'fp32:adv') + tuple(
      f'{b}:{m}' for b in BITS for m in METHODS)
  c.suites = ('clean', 'adversarial', 'corruption', 'amplification')
  # The columns of the defenses table: PGD at each budget, AutoAttack,
  # transfer from the float model at the AutoAttack budget, mean corruption
  # accuracy. The sample models break at small budgets (float PGD-10
  # accuracy at 2/255: ViT 20%, ResNet-20 95%; at 4/255: 0% and 71%), so the
  # sample grid is 1, 2, 4 /255 with AutoAttack at 2/255, and PGD training
  # (LAAQ's start) at 4/255.
  c.adversarial.attacks = ('pgd_linf', 'autoattack')
  c.quant.update(defense_settings.default_config())
  c.amplification = amplification.default_config(32 if sample else 224)
  if sample:
    c.adversarial.linf_eps_255 = (1.0, 2.0, 4.0)
    c.adversarial.autoattack_eps_255 = 2.0
    c.adversarial.num_examples = 128
    c.adversarial.autoattack_num_examples = 64
    c.corruption.names = ('benchmark',)
    c.corruption.severities = (1, 3, 5)
    c.corruption.num_examples = 128
    c.amplification.eps_255 = 2.0
    c.amplification.num_examples = 64
  else:
    c.adversarial.linf_eps_255 = (1.0, 4.0)
    c.quant.adv.eps = 4 / 255
  return c
