"""Loss reduction that stays correct under any tf.distribute strategy."""
from __future__ import annotations

import tensorflow as tf


def global_mean(per_example: tf.Tensor) -> tf.Tensor:
    """This replica's share of the mean over the *global* batch.

    Gradients of the returned value are summed across replicas by the optimizer,
    so each replica divides its sum by the number of examples in all replicas
    together (an all-reduce, which also handles an uneven last batch). Without a
    strategy this is the plain mean.
    """
    local_sum = tf.reduce_sum(per_example)
    local_count = tf.cast(tf.shape(per_example)[0], per_example.dtype)
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        local_count = context.all_reduce(tf.distribute.ReduceOp.SUM, local_count)
    return local_sum / tf.maximum(local_count, 1.0)
