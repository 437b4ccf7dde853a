"""robustmq_jax: robustness of quantized image classifiers, in compiled JAX."""

__version__ = '0.1.0'
