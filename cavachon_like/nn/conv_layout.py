"""Layouts of the Conv1D encoder and decoder over chromosome segments, and their fast paths.

Each layer of :class:`~cavachon_like.nn.Conv1DEncoder` and
:class:`~cavachon_like.nn.Conv1DDecoder` reads its input as chromosome segments padded
to whole windows (:func:`conv_layout`; the rule is in :mod:`cavachon_like.nn.conv`).

The layouts change by one split into contiguous pieces and one concat with zero blocks
per layer (no gathers along the bins), sparse input is written straight into the padded
layout, a transposed convolution with kernel = stride (no overlapping windows) is one
matrix product, as is a convolution with kernel = stride, and batch norm of the
convolutional maps uses TensorFlow's fused kernel in training. The Keras layers hold the
weights (and compute every other case), so the numbers, the weights and saved models are
those of the plain layers: ``tests/test_conv.py`` checks them against the Keras layers
applied one chromosome at a time. Gathers with one float per slice, their scatter-add
gradients, strided transposed convolutions and Keras' unfused batch norm, which these
paths avoid, made the convolutional model's step about half again as slow.
"""
from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf


def _out_length(n: int, kernel: int, stride: int) -> int:
    """Windows of a valid convolution that cover all ``n`` positions of one segment (zero-padded)."""
    return -(-max(n - kernel, 0) // stride) + 1


def conv_layout(sizes: Sequence[int], kernels: Sequence[int], strides: Sequence[int]) -> list[dict[str, list[int]]]:
    """Per-layer segment lengths of the chromosome-respecting convolution stack.

    For layer ``i`` with input segments ``n`` (the chromosome sizes for ``i = 0``):
    ``padded`` (each a multiple of the stride and at least the kernel) is what the layer
    reads, ``windows = padded / stride`` the windows starting in each segment, and
    ``out`` (<= ``windows``) those that lie entirely in the segment, i.e. the next
    layer's ``n``. Returns one ``{"n", "padded", "windows", "out"}`` per layer.
    """
    layout = []
    n = [int(s) for s in sizes]
    for kernel, stride in zip(kernels, strides):
        out = [_out_length(s, kernel, stride) for s in n]
        padded = [stride * (-(-(kernel + stride * (o - 1)) // stride)) for o in out]
        layout.append({"n": n, "padded": padded, "windows": [p // stride for p in padded], "out": out})
        n = out
    return layout


def _zeros(x: tf.Tensor, n: int, axis: int) -> tf.Tensor:
    """Zeros shaped like ``x`` but ``n`` long along ``axis``."""
    shape = tf.shape(x)
    return tf.zeros(tf.concat([shape[:axis], [n], shape[axis + 1:]], 0), x.dtype)


def relayout(x: tf.Tensor, src: Sequence[int], dst: Sequence[int], total: int | None = None, tail: int = 0,
              axis: int = 1) -> tf.Tensor:
    """``x`` re-laid out from segments of lengths ``src`` to segments of lengths ``dst`` along ``axis``.

    Each ``dst`` segment holds the first ``min(s, d)`` positions of its ``src`` segment and
    zeros after them; ``tail`` zeros follow the last one. ``x`` may hold ``total - sum(src)``
    more positions after the segments, which are dropped. ``x`` itself when nothing changes.
    One split into contiguous pieces and one concat with zero blocks: the gradient is a
    concat and slices, where a gather along ``axis`` (one float per slice when the channels
    are few) and its scatter-add gradient were the slowest ops of a training step.
    """
    src, dst = [int(s) for s in src], [int(d) for d in dst]
    total = sum(src) if total is None else int(total)
    if src == dst and not tail and total == sum(src):
        return x
    sizes: list[int] = []  # the split of x
    parts: list[int] = []  # the concat: i >= 0 is piece i of the split, -n is n zeros
    for s, d in zip(src, dst):
        take = min(s, d)
        parts.append(len(sizes))
        sizes.append(take)
        if s > take:
            sizes.append(s - take)
        if d > take:
            parts.append(take - d)
    if total > sum(src):
        sizes.append(total - sum(src))
    if tail:
        parts.append(-int(tail))
    merged: list[int] = []
    for part in parts:  # one block of zeros between two pieces
        if part < 0 and merged and merged[-1] < 0:
            merged[-1] += part
        else:
            merged.append(part)
    pieces = tf.split(x, sizes, axis=axis) if len(sizes) > 1 else [x]
    out = [pieces[p] if p >= 0 else _zeros(x, -p, axis) for p in merged]
    return out[0] if len(out) == 1 else tf.concat(out, axis=axis)


def strided_matmul(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor | None) -> tf.Tensor:
    """A valid Conv1D of ``x`` ``(B, L, C)`` with ``kernel`` ``(K, C, F)`` and stride ``K`` (``L`` a
    multiple of ``K``): the windows do not overlap, so it is ``(B * L / K, K * C)`` times
    ``(K * C, F)``. Its input gradient is a matrix product too, where a convolution's is a
    strided transposed convolution, slow on CPU."""
    k, c, f = (int(d) for d in kernel.shape)
    y = tf.matmul(tf.reshape(x, [-1, k * c]), tf.reshape(tf.cast(kernel, x.dtype), [k * c, f]))
    y = tf.reshape(y, [-1, int(x.shape[1]) // k, f])
    return y if bias is None else y + tf.cast(bias, x.dtype)


def strided_matmul_transpose(h: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor | None) -> tf.Tensor:
    """A valid Conv1DTranspose of ``h`` ``(B, W, F)`` with ``kernel`` ``(K, O, F)`` and stride
    ``K``: each input position writes its own ``K`` outputs (no overlap-add), so it is
    ``(B * W, F)`` times ``(F, K * O)``, reshaped to ``(B, W * K, O)``."""
    k, o, f = (int(d) for d in kernel.shape)
    matrix = tf.reshape(tf.transpose(tf.cast(kernel, h.dtype), [2, 0, 1]), [f, k * o])
    y = tf.reshape(tf.matmul(tf.reshape(h, [-1, f]), matrix), [-1, int(h.shape[1]) * k, o])
    # A broadcast add, not bias_add: with one output channel the latter's gradient
    # (BiasAddGrad over a last axis of 1) was slower than the matrix product.
    return y if bias is None else y + tf.cast(bias, h.dtype)


def fused_batch_norm(norm: keras.layers.BatchNormalization, h: tf.Tensor, training: bool | None) -> tf.Tensor:
    """``norm(h, training=training)`` for a ``(B, L, C)`` map, by one fused op in training.

    Keras' batch norm is a dozen element-wise ops and reductions (and as many in its
    gradient) over the whole map, the largest tensor of a Conv1D VAE; TensorFlow's fused
    kernel does the same normalisation (batch mean and biased variance) in one pass each
    way. The moving statistics are updated as Keras does, with the biased variance (the
    fused op returns the unbiased one). Anything else (inference, a frozen layer, half
    precision, renorm or synchronised statistics) goes through the layer itself.
    """
    fusable = (training and norm.trainable and h.dtype == tf.float32 and len(h.shape) == 3 and norm.scale
               and norm.center and norm.axis in (-1, 2) and not norm.renorm and not norm.synchronized
               and h.shape[1] is not None)
    if not fusable:
        return norm(h, training=training)
    channels = int(h.shape[2])
    y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
        x=tf.reshape(h, [-1, int(h.shape[1]), 1, channels]), scale=norm.gamma, offset=norm.beta,
        mean=tf.zeros([0], h.dtype), variance=tf.zeros([0], h.dtype), epsilon=norm.epsilon, is_training=True,
        data_format="NHWC")
    n = tf.cast(tf.size(h) // channels, h.dtype)
    variance = variance * tf.math.divide_no_nan(n - 1.0, n)
    norm.moving_mean.assign(norm.moving_mean * norm.momentum + mean * (1.0 - norm.momentum))
    norm.moving_variance.assign(norm.moving_variance * norm.momentum + variance * (1.0 - norm.momentum))
    return tf.reshape(y, tf.shape(h))


def check_conv_args(filters: Sequence[int], kernel_size: int | Sequence[int], strides: int | Sequence[int] | None,
                  dropout: float, chromosome_sizes: Sequence[int] | None, owner: str):
    filters = [int(f) for f in filters]
    if not filters or min(filters) < 1:
        raise ValueError(f"{owner}: filters must be a non-empty list of positive integers, got {filters!r}.")
    kernels = [int(kernel_size)] * len(filters) if np.isscalar(kernel_size) else [int(k) for k in kernel_size]
    if strides is None:
        strides = kernels
    stride_list = [int(strides)] * len(filters) if np.isscalar(strides) else [int(s) for s in strides]
    if len(kernels) != len(filters) or len(stride_list) != len(filters):
        raise ValueError(f"{owner}: {len(filters)} filters but kernel_size {kernels} and strides {stride_list}; "
                         "give one value for all layers or one per layer.")
    if min(kernels) < 1 or min(stride_list) < 1:
        raise ValueError(f"{owner}: kernel_size and strides must be positive, got {kernels} and {stride_list}.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"{owner}: dropout must be in [0, 1), got {dropout!r}.")
    sizes = None
    if chromosome_sizes is not None:
        sizes = [int(s) for s in chromosome_sizes]
        if not sizes or min(sizes) < 1:
            raise ValueError(f"{owner}: chromosome_sizes must be positive bin counts, got {chromosome_sizes!r}.")
    return filters, kernels, stride_list, sizes


def segment_sizes(n_bins: int, chromosome_sizes: list[int] | None, owner: str) -> list[int]:
    if chromosome_sizes is None:
        return [int(n_bins)]
    if sum(chromosome_sizes) != n_bins:
        raise ValueError(f"{owner}: chromosome_sizes sum to {sum(chromosome_sizes)} bins but the modality has "
                         f"{n_bins}; pass the bins per chromosome of the binned data (chromosome_boundaries).")
    return list(chromosome_sizes)
