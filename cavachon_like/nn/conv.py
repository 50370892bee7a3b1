"""Conv1D encoder and decoder over genomic bins (paper 004, ConvNet-VAE).

A component whose modalities are binned on the same genomic bins (QC step
``bin_genome``) is read as one sequence of ``n_bins`` positions with one channel per
modality. The encoder applies Conv1D blocks (Conv1D -> batch norm -> ReLU -> dropout;
kernel = stride by default, paper groups 1 and 2 use K = S = 11, 31, 51 or K = 11,
S = 3), flattens, concatenates the batch covariates *after* the convolutions (paper
Sec. 2: one-hot covariates are not sequences) and ends in the same mean / variance
heads as :class:`~cavachon_like.nn.Encoder`. The decoder maps ``[z_hat; b]`` with one
linear dense layer to a ``(length, filters)`` map and back to the bins with
Conv1DTranspose blocks; its last transposed convolution gives one channel per
likelihood parameter (``logits`` for Poisson, plus ``dispersion`` for NB), which the
likelihood turns into ``softmax(logits) * library size`` (the softmax over bins of the
paper) in the loss.

The ``log(x + 1)`` of each input channel (paper Sec. 2.2) is the preprocessor's: Poisson
and NB likelihoods have ``input_transform = "log1p_normalize"``, so every modality
(channel) arrives already as ``log1p(1e4 * x / library size)`` of its own library, and
the encoder does not transform it again.

Chromosome padding
------------------
With ``chromosome_sizes`` (bins per chromosome in the order of the bins, e.g.
``chromosome_boundaries(var)`` differences), each chromosome's segment is zero-padded
so that no convolution window covers bins of two chromosomes, the option the paper's
discussion suggests ("zero-pad these boundaries ... and maintain the padding ... after
each convolutional layer"). It holds at **every** layer, not only the first: before
each Conv1D the segments of the previous layer's output are re-padded to a multiple
of that layer's stride (and to at least its kernel), and the windows that would start
in one chromosome and end in the next (only when kernel > stride) are dropped, so the
receptive field of every unit of every layer lies in one chromosome. The flatten +
dense layer after the convolutions mixes chromosomes, as it mixes everything. The
decoder mirrors the layout: each transposed convolution reads its chromosome segments
zero-padded to the encoder's padded window counts (so the overlapping outputs of
kernel > stride never reach a neighbouring chromosome) and its output is cropped back to
each chromosome's bins. Without ``chromosome_sizes`` the bins are one segment, padded
at its end only. Padding costs at most ``stride - 1`` (plus ``kernel - stride``)
positions per chromosome and layer.

The layouts and the fast paths of these layers are in :mod:`cavachon_like.nn.conv_layout`.
"""
from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from .conv_layout import (
    check_conv_args,
    conv_layout,
    fused_batch_norm,
    relayout,
    segment_sizes,
    strided_matmul,
    strided_matmul_transpose,
)
from .decoder import Decoder
from .encoder import Encoder
from .sparse import as_dense

#: Paper 004, Table 1, group 1 with the smallest kernel (K11, S11; 32 filters) and 128 FC units.
DEFAULT_FILTERS = (32,)
DEFAULT_KERNEL_SIZE = 11
DEFAULT_UNITS = (128,)


@keras.saving.register_keras_serializable(package="cavachon_like")
class Conv1DEncoder(Encoder):
    """Conv1D encoder of paper 004: modalities as channels over the same genomic bins.

    ``call(x, batch)`` takes the component's modality tensors (each ``(B, n_bins)``,
    dense or sparse; sparse ones are densified one batch at a time), stacks them as
    channels ``(B, n_bins, M)``, applies the Conv1D blocks, flattens, concatenates the
    batch covariates, applies the dense ``units`` blocks and returns ``(mean, variance)``
    from the heads of :class:`~cavachon_like.nn.Encoder` (linear mean, softplus variance
    + ``min_variance``). Use it with ``posterior: concat`` (one encoder over all the
    modalities, as the paper) or as the per-modality expert of ``poe``/``moe``.

    Parameters
    ----------
    latent_dim
        Dimension of z.
    filters
        Output channels of each Conv1D layer, e.g. ``[32]`` (group 1) or ``[32, 64]``.
    kernel_size
        Kernel of every layer, or one per layer.
    strides
        Stride of every layer or one per layer; default the kernel size (non-overlapping
        windows; the convolution replaces pooling).
    units
        Dense layers (batch norm, ReLU, dropout) between the flattened maps + covariates
        and the heads; the paper's single FC of 128 units by default, ``[]`` for none.
    dropout
        Dropout rate after every block, in training only.
    condition_on_batch
        Concatenate the batch covariates after the convolutions (default, as the paper).
    chromosome_sizes
        Bins per chromosome, in bin order; then no window of any layer spans two
        chromosomes (see the module docstring). ``None``: the bins are one sequence.
    min_variance
        Floor added to the softplus variance.
    """

    alias = "conv1d"

    def __init__(
        self,
        latent_dim: int,
        filters: Sequence[int] = DEFAULT_FILTERS,
        kernel_size: int | Sequence[int] = DEFAULT_KERNEL_SIZE,
        strides: int | Sequence[int] | None = None,
        units: Sequence[int] = DEFAULT_UNITS,
        dropout: float = 0.0,
        condition_on_batch: bool = True,
        chromosome_sizes: Sequence[int] | None = None,
        min_variance: float = 1e-4,
        **kwargs,
    ) -> None:
        # Skip Encoder.__init__: it builds the MLP body this encoder replaces.
        keras.layers.Layer.__init__(self, **kwargs)
        self.filters, self.kernel_sizes, self.strides, self.chromosome_sizes = check_conv_args(
            filters, kernel_size, strides, dropout, chromosome_sizes, "Conv1DEncoder")
        self.units = [int(u) for u in units]
        self.dropout = float(dropout)
        self.latent_dim = int(latent_dim)
        self.condition_on_batch = bool(condition_on_batch)
        self.min_variance = float(min_variance)
        self.convs = [keras.layers.Conv1D(f, k, strides=s, padding="valid", name=f"conv_{i}")
                      for i, (f, k, s) in enumerate(zip(self.filters, self.kernel_sizes, self.strides))]
        self.conv_norms = [keras.layers.BatchNormalization(name=f"conv_norm_{i}") for i in range(len(self.filters))]
        self.dense = [keras.layers.Dense(u, name=f"dense_{i}") for i, u in enumerate(self.units)]
        self.dense_norms = [keras.layers.BatchNormalization(name=f"dense_norm_{i}") for i in range(len(self.units))]
        self.dropout_layer = keras.layers.Dropout(self.dropout, name="dropout") if self.dropout else None
        self.mean_head = keras.layers.Dense(self.latent_dim, name="mean")
        self.variance_head = keras.layers.Dense(self.latent_dim, name="variance")
        self.layout: list[dict[str, list[int]]] = []
        self._input_position: np.ndarray | None = None

    def _set_layout(self, n_bins: int) -> None:
        sizes = segment_sizes(n_bins, self.chromosome_sizes, self.name)
        self.layout = conv_layout(sizes, self.kernel_sizes, self.strides)
        # Where each input bin sits in the first layer's padded sequence (sparse input is
        # scattered straight there).
        first = self.layout[0]
        starts = np.cumsum([0, *first["padded"][:-1]])
        self._input_position = np.concatenate([s + np.arange(n) for s, n in zip(starts, first["n"])]).astype(np.int64)

    def _tail(self, i: int) -> int:
        """Trailing zeros of layer ``i``'s input: ``max(0, K - S)`` give the last segment all its windows."""
        return max(0, self.kernel_sizes[i] - self.strides[i])

    def _pad(self, h: tf.Tensor, i: int) -> tf.Tensor:
        layer = self.layout[i]
        return relayout(h, layer["n"], layer["padded"], tail=self._tail(i))

    def _input(self, x: Sequence[tf.Tensor | tf.SparseTensor]) -> tf.Tensor:
        """The modalities as channels ``(B, first padded length, M)``, already padded for layer 0.

        Sparse modalities are scattered straight into the padded, channel-interleaved layout
        (one op over the non-zeros); dense ones are stacked and padded.
        """
        length, channels = sum(self.layout[0]["padded"]) + self._tail(0), len(x)
        if all(isinstance(t, tf.SparseTensor) for t in x):
            position = tf.constant(self._input_position * channels)
            indices = [tf.stack([t.indices[:, 0], tf.gather(position, t.indices[:, 1]) + m], axis=1)
                       for m, t in enumerate(x)]
            shape = tf.stack([tf.cast(x[0].dense_shape[0], tf.int64), tf.constant(length * channels, tf.int64)])
            # Indices unique but, across channels, unordered: no validation (which wants order).
            flat = tf.sparse.to_dense(tf.SparseTensor(tf.concat(indices, 0), tf.concat([t.values for t in x], 0), shape),
                                      validate_indices=False)
            return tf.reshape(flat, [-1, length, channels])
        # Densified sparse input has no static length; without padding (every chromosome a
        # multiple of the stride) nothing would restore it before the flatten needs it.
        h = tf.ensure_shape(tf.stack([as_dense(t) for t in x], axis=-1), [None, sum(self.layout[0]["n"]), channels])
        return self._pad(h, 0)

    def _conv(self, h: tf.Tensor, i: int) -> tf.Tensor:
        """Layer ``i``'s convolution of its padded input (kernel = stride: one matrix product)."""
        conv = self.convs[i]
        if self.kernel_sizes[i] == self.strides[i]:
            return strided_matmul(tf.cast(h, conv.compute_dtype), conv.kernel, conv.bias)  # dtype as the layer's
        return conv(h)

    def _n_bins(self, x_shape: Sequence[Sequence[int | None]]) -> int:
        sizes = [int(s[-1]) for s in x_shape]
        if len(set(sizes)) != 1:
            raise ValueError(f"{self.name}: a Conv1D encoder stacks its modalities as channels over the same bins, but "
                             f"they have {sizes} features; align them with the bin_genome QC step.")
        return sizes[0]

    def build(self, x_shape: Sequence[Sequence[int | None]], batch_shape: Sequence[int | None] | None = None) -> None:
        """Build from one ``(B, n_bins)`` shape per modality and the ``(B, n_batch)`` batch shape (or ``None``)."""
        n_bins = self._n_bins(x_shape)
        self._set_layout(n_bins)
        channels = len(x_shape)
        for conv, norm, layer, tail in zip(self.convs, self.conv_norms, self.layout,
                                           [max(0, k - s) for k, s in zip(self.kernel_sizes, self.strides)]):
            conv.build((None, sum(layer["padded"]) + tail, channels))
            norm.build((None, sum(layer["out"]), conv.filters))
            channels = conv.filters
        width = sum(self.layout[-1]["out"]) * channels
        if self._uses_batch(batch_shape):
            width += int(batch_shape[-1])
        for dense, norm in zip(self.dense, self.dense_norms):
            dense.build((None, width))
            norm.build((None, dense.units))
            width = dense.units
        self.mean_head.build((None, width))
        self.variance_head.build((None, width))

    def _block(self, h: tf.Tensor, norm: keras.layers.Layer, training: bool | None) -> tf.Tensor:
        h = tf.nn.relu(fused_batch_norm(norm, h, training))
        return self.dropout_layer(h, training=training) if self.dropout_layer is not None else h

    def conv_features(self, x: Sequence[tf.Tensor | tf.SparseTensor], training: bool | None = None) -> tf.Tensor:
        """The last Conv1D block's output ``(B, positions, filters[-1])`` (padding positions dropped)."""
        if not self.layout:
            self._set_layout(self._n_bins([tuple(t.shape) for t in x]))
        h = self._input(x)
        for i, (norm, layer) in enumerate(zip(self.conv_norms, self.layout)):
            h = self._conv(h if i == 0 else self._pad(h, i), i)
            h = self._block(relayout(h, layer["windows"], layer["out"]), norm, training)
        return h

    def features(self, x: Sequence[tf.Tensor | tf.SparseTensor], batch: tf.Tensor | None = None,
                 training: bool | None = None) -> tf.Tensor:
        """The last hidden layer's output (the input of the mean and variance heads)."""
        h = self.conv_features(x, training)
        h = tf.reshape(h, [tf.shape(h)[0], int(h.shape[1]) * int(h.shape[2])])
        if self._uses_batch(batch):
            h = tf.concat([h, tf.cast(batch, h.dtype)], axis=-1)
        for dense, norm in zip(self.dense, self.dense_norms):
            h = self._block(dense(h), norm, training)
        return h

    def gaussian(self, h: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """As :meth:`Encoder.gaussian <cavachon_like.nn.Encoder.gaussian>`, with both heads in one
        matrix product: without dense ``units`` they read the flattened maps (tens of thousands
        of columns), which one product (and its gradient) then reads once instead of twice."""
        heads = (self.mean_head, self.variance_head)
        if any(getattr(d, "quantization_mode", None) or d.bias is None or d.activation is not keras.activations.linear
               for d in heads):
            return super().gaussian(h)
        h = tf.cast(h, self.mean_head.compute_dtype)
        out = (tf.matmul(h, tf.concat([tf.cast(d.kernel, h.dtype) for d in heads], axis=1))
               + tf.concat([tf.cast(d.bias, h.dtype) for d in heads], axis=0))
        mean, variance = tf.split(out, 2, axis=1)
        return mean, tf.nn.softplus(variance) + self.min_variance

    def call(self, x: Sequence[tf.Tensor | tf.SparseTensor], batch: tf.Tensor | None = None,
             training: bool | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """``x``: a list of ``(B, n_bins)`` modality tensors (dense or sparse); returns mean and variance."""
        if len(x) != self.convs[0].kernel.shape[1]:
            raise ValueError(f"{self.name} was built for {self.convs[0].kernel.shape[1]} modalities, got {len(x)}.")
        return self.gaussian(self.features(x, batch, training))

    def compute_output_shape(self, x_shape, batch_shape=None):
        n = x_shape[0][0]
        return (n, self.latent_dim), (n, self.latent_dim)

    def get_config(self) -> dict:
        return {
            **keras.layers.Layer.get_config(self),
            "latent_dim": self.latent_dim,
            "filters": self.filters,
            "kernel_size": self.kernel_sizes,
            "strides": self.strides,
            "units": self.units,
            "dropout": self.dropout,
            "condition_on_batch": self.condition_on_batch,
            "chromosome_sizes": self.chromosome_sizes,
            "min_variance": self.min_variance,
        }


@keras.saving.register_keras_serializable(package="cavachon_like")
class Conv1DDecoder(Decoder):
    """Conv1D decoder of paper 004: ``[z_hat; b]`` -> dense -> Conv1DTranspose blocks -> bins.

    A linear dense layer (as the paper's decoder FC) maps ``[z_hat; b]`` to the last
    encoder layer's map ``(positions, filters[-1])``; Conv1DTranspose blocks (batch norm,
    ReLU, dropout) with ``filters[-2], ..., filters[0]`` channels go back up, and one
    final Conv1DTranspose per likelihood parameter (one channel, the first layer's kernel
    and stride) gives ``{parameter: (B, n_features)}``, the padding cropped. The
    likelihood applies ``softmax`` over the bins times the library size to ``logits``
    (Poisson, NB); NB's ``dispersion`` head is per cell and bin, as in
    :class:`~cavachon_like.nn.Decoder`.

    Parameters
    ----------
    n_features
        Number of bins of the modality.
    parameters
        Names of the likelihood's parameters, one head each.
    filters, kernel_size, strides, chromosome_sizes
        As the encoder's (:class:`Conv1DEncoder`), listed from the input side: the decoder
        mirrors them, so pass the same values to both.
    dropout
        Dropout rate after every hidden block, in training only.
    """

    alias = "conv1d"

    def __init__(
        self,
        n_features: int,
        parameters: Sequence[str],
        filters: Sequence[int] = DEFAULT_FILTERS,
        kernel_size: int | Sequence[int] = DEFAULT_KERNEL_SIZE,
        strides: int | Sequence[int] | None = None,
        dropout: float = 0.0,
        chromosome_sizes: Sequence[int] | None = None,
        **kwargs,
    ) -> None:
        keras.layers.Layer.__init__(self, **kwargs)
        self.filters, self.kernel_sizes, self.strides, self.chromosome_sizes = check_conv_args(
            filters, kernel_size, strides, dropout, chromosome_sizes, "Conv1DDecoder")
        self.n_features = int(n_features)
        self.parameters = tuple(parameters)
        self.dropout = float(dropout)
        self.layout = conv_layout(segment_sizes(self.n_features, self.chromosome_sizes, "Conv1DDecoder"),
                                  self.kernel_sizes, self.strides)
        self.positions = sum(self.layout[-1]["out"])
        self.dense = keras.layers.Dense(self.positions * self.filters[-1], name="dense")
        # Layer i (deepest first) goes from layout[i]["out"] back to layout[i]["n"].
        self.deconvs = [keras.layers.Conv1DTranspose(self.filters[i - 1], self.kernel_sizes[i], strides=self.strides[i],
                                                     padding="valid", name=f"deconv_{i}")
                        for i in range(len(self.filters) - 1, 0, -1)]
        self.norms = [keras.layers.BatchNormalization(name=f"deconv_norm_{i}")
                      for i in range(len(self.filters) - 1, 0, -1)]
        self.dropout_layer = keras.layers.Dropout(self.dropout, name="dropout") if self.dropout else None
        self.heads = {p: keras.layers.Conv1DTranspose(1, self.kernel_sizes[0], strides=self.strides[0], padding="valid",
                                                      name=f"head_{p}") for p in self.parameters}
        # The transposed convolution of layer i writes (sum(windows) - 1) * S + K positions.
        self._totals = [(sum(layer["windows"]) - 1) * s + k
                        for layer, k, s in zip(self.layout, self.kernel_sizes, self.strides)]

    def build(self, z_hat_shape: Sequence[int | None], batch_shape: Sequence[int | None]) -> None:
        """Build from the shapes of :meth:`call`'s ``z_hat`` ``(B, d)`` and ``batch`` ``(B, n_batch)``."""
        self.dense.build((None, int(z_hat_shape[-1]) + int(batch_shape[-1])))
        channels = self.filters[-1]
        for deconv, norm, i in zip(self.deconvs, self.norms, range(len(self.filters) - 1, 0, -1)):
            deconv.build((None, sum(self.layout[i]["windows"]), channels))
            norm.build((None, sum(self.layout[i]["n"]), deconv.filters))
            channels = deconv.filters
        for head in self.heads.values():
            head.build((None, sum(self.layout[0]["windows"]), channels))

    def _up(self, h: tf.Tensor, layer: keras.layers.Layer, i: int, squeeze: bool = False) -> tf.Tensor:
        """Transposed convolution ``layer`` (of encoder layer ``i``) from ``layout[i]["out"]``
        positions back to ``layout[i]["n"]``; ``squeeze`` drops its single channel."""
        shape = self.layout[i]
        h = relayout(h, shape["out"], shape["windows"])
        if self.kernel_sizes[i] == self.strides[i]:
            h = strided_matmul_transpose(tf.cast(h, layer.compute_dtype), layer.kernel, layer.bias)
        else:
            h = layer(h)
        if squeeze:
            h = tf.squeeze(h, -1)
        return relayout(h, shape["padded"], shape["n"], total=self._totals[i])

    def call(self, z_hat: tf.Tensor, batch: tf.Tensor, training: bool | None = None) -> dict[str, tf.Tensor]:
        """``{parameter: (B, n_features)}``; ``batch`` may have no columns (no covariates)."""
        h = self.dense(tf.concat([z_hat, tf.cast(batch, z_hat.dtype)], axis=-1))
        h = tf.reshape(h, [tf.shape(h)[0], self.positions, self.filters[-1]])
        for deconv, norm, i in zip(self.deconvs, self.norms, range(len(self.filters) - 1, 0, -1)):
            h = tf.nn.relu(fused_batch_norm(norm, self._up(h, deconv, i), training))
            if self.dropout_layer is not None:
                h = self.dropout_layer(h, training=training)
        return {p: self._up(h, head, 0, squeeze=True) for p, head in self.heads.items()}

    def compute_output_shape(self, z_hat_shape, batch_shape=None):
        return {p: (z_hat_shape[0], self.n_features) for p in self.parameters}

    def get_config(self) -> dict:
        return {
            **keras.layers.Layer.get_config(self),
            "n_features": self.n_features,
            "parameters": list(self.parameters),
            "filters": self.filters,
            "kernel_size": self.kernel_sizes,
            "strides": self.strides,
            "dropout": self.dropout,
            "chromosome_sizes": self.chromosome_sizes,
        }
