"""Rewrites that let XLA:CPU run our programs with its fast kernels.

`conv_layout.canonical_convs(fn)` re-emits `fn` with every convolution in the
layout XLA:CPU's fast kernels take (inside loops too) and every grouped or
depthwise convolution as per-tap matrix products (`grouped_conv`). The
attacks' value-and-grad, the training steps and the evaluator's steps use it
on the CPU backend (`conv_layout.wanted()`); other backends get the program
unchanged.
"""
