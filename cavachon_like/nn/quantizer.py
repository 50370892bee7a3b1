"""Vector quantisation of a latent (VQ-VAE; CVQVAE, paper 002).

Each encoder output ``z`` is replaced by its nearest codebook vector ``e_z`` (squared
Euclidean distance). Gradients pass straight through (``z + sg(e_z - z)``), so the encoder
learns from the decoder's loss as if there were no quantisation. The codebook is not
trained by gradients: it follows the exponential moving averages of paper 002, Appendix A
(van den Oord et al. 2017), with decay ``gamma``::

    N_i <- gamma N_i + (1 - gamma) n_i          # cells assigned to code i in this batch
    S_i <- gamma S_i + (1 - gamma) sum_j z_ij   # their sum
    e_i  = S_i / N_i                            # (N_i Laplace-smoothed, as Sonnet's VQ-VAE)

so the paper's VQ-loss term ``||sg[z] - e_z||^2`` is replaced by the update and only the
commitment term ``beta ||z - sg[e_z]||^2`` reaches the encoder. Codes whose moving count
falls below ``restart_below`` are *dead* (no cell has chosen them for a while); each is
restarted at a random encoder output of the current batch, so the codebook keeps being
used. The codes start on random encoder outputs of the first training batch (a
data-dependent initialisation: codes drawn away from the data would be nearest to nothing). Under ``tf.distribute`` the batch statistics are summed over replicas before the
update, so every replica's codebook stays identical.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def _replicas() -> tf.distribute.ReplicaContext | None:
    context = tf.distribute.get_replica_context()
    return context if context is not None and context.num_replicas_in_sync > 1 else None


def _replica_sum(value: tf.Tensor) -> tf.Tensor:
    context = _replicas()
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value) if context is not None else value


def _replica_rows(value: tf.Tensor) -> tf.Tensor:
    """The rows of every replica's ``value``, in replica order (the global batch)."""
    context = _replicas()
    return context.all_gather(value, axis=0) if context is not None else value


def codebook_usage(codes: tf.Tensor | np.ndarray, n_codes: int) -> tuple[tf.Tensor, tf.Tensor]:
    """``(perplexity, codes in use)`` of a set of code indices. The perplexity, ``exp`` of the
    entropy of the code frequencies, is 1 when every cell uses one code and ``n_codes`` when
    all codes are used equally: the effective number of codes in use."""
    counts = tf.math.bincount(tf.cast(tf.reshape(codes, [-1]), tf.int32), minlength=n_codes, maxlength=n_codes,
                              dtype=tf.float32)
    p = counts / tf.maximum(tf.reduce_sum(counts), 1.0)
    entropy = -tf.reduce_sum(tf.math.multiply_no_nan(tf.math.log(p), p))
    return tf.exp(entropy), tf.reduce_sum(tf.cast(counts > 0, tf.float32))


def perplexity(codes: tf.Tensor | np.ndarray, n_codes: int) -> float:
    """The perplexity of :func:`codebook_usage`, as a float."""
    return float(codebook_usage(codes, n_codes)[0])


@keras.saving.register_keras_serializable(package="cavachon_like")
class VectorQuantizer(keras.layers.Layer):
    """Nearest-codebook quantisation with EMA codebook updates and dead-code restarts.

    ``call(z, training=False)`` returns ``(quantized, codes, commitment)``: the straight-through
    quantised latent ``(B, dim)`` (forward value ``e_z``, gradient of ``z``), the code index of
    each row ``(B,)`` and the per-row commitment loss ``beta * ||z - sg(e_z)||^2`` ``(B,)``.
    With ``training=True`` it also updates the codebook from the batch (see the module
    docstring).

    Parameters
    ----------
    n_codes
        Codebook size K.
    decay
        EMA decay ``gamma`` (paper 002: 0.99).
    beta
        Weight of the commitment loss (VQ-VAE: 0.25).
    restart_below
        A code whose moving count of assigned cells (per step) falls below this is restarted
        at a random encoder output of the batch; ``0`` disables restarts. The default, one
        cell per step (Jukebox's threshold), restarts a code as soon as it falls out of use;
        at decay 0.99 a threshold of 0.01 waits 458 steps, and on SNARE-seq the batch then
        sat on one code for the first 11 epochs (``configs/cvqvae.yaml``, README).
    epsilon
        Laplace smoothing of the moving counts, so an unused code's mean stays finite.
    seed
        Seed of the initial codebook and of the restarts.

    Examples
    --------
    >>> vq = VectorQuantizer(n_codes=64)
    >>> quantized, codes, commitment = vq(z, training=True)  # doctest: +SKIP
    """

    def __init__(self, n_codes: int = 256, decay: float = 0.99, beta: float = 0.25, restart_below: float = 1.0,
                 epsilon: float = 1e-5, seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if n_codes < 2:
            raise ValueError(f"{self.name}: n_codes must be at least 2, got {n_codes}.")
        if not 0.0 < decay < 1.0:
            raise ValueError(f"{self.name}: decay must be in (0, 1), got {decay}.")
        if beta < 0 or restart_below < 0 or epsilon <= 0:
            raise ValueError(f"{self.name}: beta and restart_below must be >= 0 and epsilon > 0, "
                             f"got {beta}, {restart_below}, {epsilon}.")
        self.n_codes, self.decay, self.beta = int(n_codes), float(decay), float(beta)
        self.restart_below, self.epsilon, self.seed = float(restart_below), float(epsilon), seed
        self.restarts = keras.random.SeedGenerator(seed)

    def build(self, z_shape) -> None:
        """Create the codebook ``(n_codes, dim)`` and its moving averages for inputs ``(B, dim)``."""
        dim = int(z_shape[-1])
        # Placeholders until the first training batch puts every code on an encoder output.
        self.codebook = self.add_weight(shape=(self.n_codes, dim), name="codebook", trainable=False,
                                        initializer=keras.initializers.RandomNormal(stddev=1.0, seed=self.seed))
        self.counts = self.add_weight(shape=(self.n_codes,), name="ema_counts", trainable=False,
                                      initializer=keras.initializers.Constant(1.0))
        self.sums = self.add_weight(shape=(self.n_codes, dim), name="ema_sums", trainable=False,
                                    initializer="zeros")
        self.initialized = self.add_weight(shape=(), name="initialized", trainable=False, initializer="zeros")
        self.built = True

    def nearest(self, z: tf.Tensor) -> tf.Tensor:
        """The index of each row's nearest code ``(B,)``."""
        codebook = tf.convert_to_tensor(self.codebook)
        distances = (tf.reduce_sum(z * z, axis=1, keepdims=True) - 2.0 * tf.matmul(z, codebook, transpose_b=True)
                     + tf.reduce_sum(codebook * codebook, axis=1)[None, :])
        return tf.argmin(distances, axis=1, output_type=tf.int32)

    def call(self, z: tf.Tensor, training: bool | None = None,
             weights: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Quantise ``z`` ``(B, dim)``; see the class docstring for the outputs. ``weights``
        ``(B,)`` 0/1 leaves rows out of the codebook update (e.g. the outputs of experts whose
        modality a cell lacks); they are still quantised."""
        z = tf.convert_to_tensor(z)
        if not self.built:
            self.build(z.shape)
        if training:
            self._initialize(z)
        codes = self.nearest(z)
        e_z = tf.gather(tf.convert_to_tensor(self.codebook), codes)  # the codebook before this batch's update
        if training:
            self._update(z, codes, weights)
        commitment = self.beta * tf.reduce_sum(tf.square(z - tf.stop_gradient(e_z)), axis=1)
        quantized = z + tf.stop_gradient(e_z - z)
        return quantized, codes, commitment

    def _global_draw(self, z: tf.Tensor) -> tf.Tensor:
        """``n_codes`` rows drawn from the global batch; every replica draws the same rows (same
        generator state, candidates gathered in replica order), so codebooks stay equal."""
        candidates = _replica_rows(tf.stop_gradient(z))
        rows = keras.random.randint((self.n_codes,), 0, tf.shape(candidates)[0], seed=self.restarts, dtype="int32")
        return tf.gather(candidates, rows)

    def _initialize(self, z: tf.Tensor) -> None:
        """On the first training batch only, put the codes on random encoder outputs (with a
        moving count of one each). Codes drawn at random away from the data would never be
        nearest to anything: the batch would collapse onto the one or two codes closest to
        a fresh encoder's outputs until dead-code restarts, hundreds of steps later."""
        first = self.initialized < 0.5
        fresh = self._global_draw(z)
        self.codebook.assign(tf.where(first, fresh, self.codebook))
        self.sums.assign(tf.where(first, fresh, self.sums))
        self.counts.assign(tf.where(first, tf.ones_like(self.counts), self.counts))
        self.initialized.assign(1.0)

    def _update(self, z: tf.Tensor, codes: tf.Tensor, weights: tf.Tensor | None = None) -> None:
        z = tf.stop_gradient(z)
        onehot = tf.one_hot(codes, self.n_codes, dtype=z.dtype)
        if weights is not None:
            onehot = onehot * tf.cast(weights, z.dtype)[:, None]
        batch_counts = _replica_sum(tf.reduce_sum(onehot, axis=0))
        batch_sums = _replica_sum(tf.matmul(onehot, z, transpose_a=True))
        counts = self.decay * self.counts + (1.0 - self.decay) * batch_counts
        sums = self.decay * self.sums + (1.0 - self.decay) * batch_sums
        total = tf.reduce_sum(counts)
        smoothed = (counts + self.epsilon) / (total + self.n_codes * self.epsilon) * total
        codebook = sums / smoothed[:, None]
        if self.restart_below > 0:
            dead = counts < self.restart_below
            fresh = self._global_draw(z)
            codebook = tf.where(dead[:, None], fresh, codebook)
            # A restarted code starts as if one cell had chosen it, so it is not restarted again at once.
            sums = tf.where(dead[:, None], fresh, sums)
            counts = tf.where(dead, tf.ones_like(counts), counts)
        self.counts.assign(counts)
        self.sums.assign(sums)
        self.codebook.assign(codebook)

    def compute_output_shape(self, z_shape):
        """Shapes of ``(quantized, codes, commitment)``."""
        return tuple(z_shape), (z_shape[0],), (z_shape[0],)

    def get_config(self) -> dict:
        return {**super().get_config(), "n_codes": self.n_codes, "decay": self.decay, "beta": self.beta,
                "restart_below": self.restart_below, "epsilon": self.epsilon, "seed": self.seed}
