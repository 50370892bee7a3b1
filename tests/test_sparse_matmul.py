"""The CSR sparse x dense product equals TensorFlow's SparseTensor product, gradients included."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from cavachon_like.nn.sparse import sparse_dense_matmul

pytestmark = pytest.mark.floor  # also run on the dependency floor (.ci/run)


def _sparse(n_rows: int, n_cols: int, density: float, seed: int, shuffle: bool = False) -> tf.SparseTensor:
    matrix = sp.random(n_rows, n_cols, density=density, format="coo", random_state=seed, dtype=np.float32)
    indices = np.stack([matrix.row, matrix.col], axis=1).astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(indices)) if shuffle else np.lexsort(indices.T[::-1])
    return tf.SparseTensor(indices[order], matrix.data[order], (n_rows, n_cols))


@pytest.mark.parametrize("shuffle", [False, True])
def test_matches_sparse_tensor_product_and_gradients(shuffle):
    x = _sparse(17, 40, 0.1, seed=0, shuffle=shuffle)
    kernel = tf.Variable(np.random.default_rng(1).normal(size=(40, 6)).astype(np.float32))
    upstream = tf.constant(np.random.default_rng(2).normal(size=(17, 6)).astype(np.float32))
    values = tf.Variable(x.values)

    def loss(product):
        with tf.GradientTape() as tape:
            out = product(tf.SparseTensor(x.indices, values, x.dense_shape), kernel)
            total = tf.reduce_sum(out * upstream)
        return (out, *tape.gradient(total, [values, kernel]))

    expected = loss(lambda a, b: tf.sparse.sparse_dense_matmul(tf.sparse.reorder(a), b))
    # gradient w.r.t. values must follow the caller's index order
    got = loss(sparse_dense_matmul)
    reference = loss(tf.sparse.sparse_dense_matmul)
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[2], expected[2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1], reference[1], rtol=1e-5, atol=1e-5)


def test_empty_batch_and_static_shape():
    x = tf.SparseTensor(tf.zeros((0, 2), tf.int64), tf.zeros((0,)), (3, 5))
    kernel = tf.ones((5, 4))
    out = tf.function(lambda v: sparse_dense_matmul(tf.SparseTensor(x.indices, v, x.dense_shape), kernel))(x.values)
    np.testing.assert_array_equal(out, np.zeros((3, 4)))


def test_float16_kernel_falls_back():
    x = _sparse(5, 8, 0.3, seed=3)
    kernel = tf.constant(np.random.default_rng(4).normal(size=(8, 3)), tf.float16)
    expected = tf.sparse.to_dense(x).numpy() @ kernel.numpy().astype(np.float32)
    np.testing.assert_allclose(sparse_dense_matmul(x, kernel).numpy().astype(np.float32), expected, rtol=1e-2, atol=1e-2)


def test_bernoulli_log_prob_of_sparse_counts_equals_dense():
    from cavachon_like.distributions import Bernoulli

    rng = np.random.default_rng(5)
    counts = ((rng.random((6, 40)) < 0.2) * rng.integers(1, 4, (6, 40))).astype(np.float32)
    counts[0] = 0.0  # a cell without counts
    logits = tf.Variable(rng.normal(size=(6, 40)).astype(np.float32))
    likelihood = Bernoulli()
    results = []
    for x in (tf.constant(counts), tf.sparse.from_dense(counts)):
        with tf.GradientTape() as tape:
            log_prob = likelihood.log_prob(x, {"logits": logits})
            total = tf.reduce_sum(log_prob)
        results.append((log_prob.numpy(), tape.gradient(total, logits).numpy()))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-6, atol=1e-6)
