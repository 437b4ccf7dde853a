"""Defenses for quantized models, as quantization methods of the benchmark.

* Defensive Quantization (Lin, Gan, Han, ICLR 2019): quantization-aware
  training with an orthogonality penalty on every kernel (`orthogonality`).
* Layer-wise adversarial-aware quantization (after Song, Ranjan, Li, arXiv
  2110.12308): per-layer clipping ranges chosen on an adversarially trained
  float model by quantization error weighted by a Lipschitz bound of the
  rest of the network (`laaq`, `lipschitz`, `adversarial_training`).
* Error amplification (`amplification`): how a small input perturbation
  grows layer by layer, the effect that motivates DQ.
"""
