"""Freeing the memory of an optimizer a training phase has finished with."""
from __future__ import annotations

import keras
import tensorflow as tf


def release(optimizer: keras.optimizers.Optimizer, strategy: tf.distribute.Strategy) -> None:
    """Replace the value of each of ``optimizer``'s variables by an empty tensor.

    Deleting the optimizer is not enough to free its slots (two copies of every weight
    an Adam trained). TensorFlow keeps some traced graphs for the life of the process:
    a custom gradient traced in graph mode registers its gradient function in a global
    registry, and that function holds its graph, whose captures hold every variable the
    traced step touched. Swish (``tf.nn.silu``), Keras' gradient all-reduce and
    :func:`~cavachon_like.nn.sparse.sparse_dense_matmul` all trace custom gradients, so each
    phase's training step stays in that registry with its optimizer's slots. Emptying
    the variables frees their memory whoever still holds them; the optimizer must not
    be used afterwards.

    Parameters
    ----------
    optimizer
        An optimizer no training step will use again.
    strategy
        The ``tf.distribute`` strategy its variables were made under (each device's copy
        is emptied).
    """
    for variable in optimizer.variables:
        value = variable.value if isinstance(variable, keras.Variable) else variable
        for local in strategy.experimental_local_results(value):
            with tf.device(local.device):
                # validate_shape=False: a variable may take a value of another shape.
                tf.raw_ops.AssignVariableOp(resource=local.handle, value=tf.zeros([0], dtype=local.dtype),
                                            validate_shape=False)
