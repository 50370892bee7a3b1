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


def multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """Whether ``strategy`` trains across several worker processes (``MultiWorkerMirroredStrategy``
    with more than one worker in its cluster)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    return sum(len(tasks) for tasks in spec.values()) > 1


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes shared files (checkpoints) for ``strategy``: always, except on
    the workers of a multi-worker strategy other than the chief (or, without one, worker 0)."""
    if not multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_type == "worker" and resolver.task_id == 0)
