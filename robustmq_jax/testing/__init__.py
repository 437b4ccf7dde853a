"""Helpers shared by tests/ and benchmarks/ (never imported by the library).

digits_cnn: a small CNN on scikit-learn digits, in Flax and as a PyTorch
twin, for the attack tests and benchmarks. torch_compat: importing
torchvision / timm on CPU-only torch. imagecorruptions_compat: the
`imagecorruptions` package patched for today's NumPy / scikit-image, the
reference of the corruption tests and benchmark.
"""
