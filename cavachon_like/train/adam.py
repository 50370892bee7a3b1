"""Adam with each variable's update in one fused TensorFlow kernel (the package's default optimizer)."""
from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


def _local_variables(variable: Any, strategy: tf.distribute.Strategy) -> tuple[tf.Variable, ...]:
    """The ``tf.Variable`` objects that hold ``variable`` on this process' devices, in device order.

    A Keras variable wraps a ``tf.Variable`` (``.value``); under a ``tf.distribute``
    strategy that is a distributed variable with one component per local device, which
    is what the strategy's ``update`` hands to :meth:`FusedAdam.update_step`.
    """
    value = variable.value if isinstance(variable, keras.Variable) else variable
    return tuple(strategy.experimental_local_results(value))


class _Moments:
    """Each local ``tf.Variable`` (by identity) -> itself and its first and second moments there.

    A plain object rather than a dict attribute: TensorFlow's tracking would wrap a dict
    of variables keyed by integers, and such a wrapper cannot be exported.
    """

    def __init__(self) -> None:
        self.by_variable: dict[int, tuple[tf.Variable, tf.Variable, tf.Variable]] = {}

    def get(self, variable: tf.Variable) -> tuple[tf.Variable, tf.Variable] | None:
        """``(m, v)`` of ``variable``, or None for a variable the optimizer was not built for."""
        entry = self.by_variable.get(id(variable))
        # The variable itself is kept, so its id cannot be reused by another object.
        return entry[1:] if entry is not None and entry[0] is variable else None


@keras.saving.register_keras_serializable(package="cavachon_like")
class FusedAdam(keras.optimizers.Optimizer):
    """Adam (Kingma & Ba 2015), the update of each variable in one ``ResourceApplyAdam`` kernel.

    The update is Keras' ``Adam`` (``amsgrad=False``) exactly, with the same defaults and
    the same epsilon placement::

        m <- beta_1 m + (1 - beta_1) g
        v <- beta_2 v + (1 - beta_2) g^2
        w <- w - lr sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)

    Keras writes it as separate element-wise operations, each of which allocates a
    temporary of the variable's size; TensorFlow's fused kernel updates ``m``, ``v`` and
    ``w`` in place in one pass. For the wide first and last layers of a chromatin
    component (tens of thousands of regions times hundreds of units) that is most of the
    optimizer's time and of the training step's transient memory (README, "Benchmarks").

    Everything else (learning-rate schedules, clipping, weight decay, gradient
    accumulation, loss scaling, ``tf.distribute``) is Keras' ``Optimizer``. The slots
    are the optimizer's own variables, so they are saved, restored and checkpointed like
    any optimizer's.

    Parameters
    ----------
    learning_rate, beta_1, beta_2, epsilon
        As in ``keras.optimizers.Adam``.
    **kwargs
        Keras' common optimizer arguments (``clipnorm``, ``weight_decay``, ...).
    """

    def __init__(self, learning_rate: Any = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, name: str = "fused_adam", **kwargs) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self._moments = _Moments()

    def build(self, var_list: list[Any]) -> None:
        """Create the first and second moments of every variable in ``var_list``.

        Build inside the strategy scope the variables were created in (``Model.fit`` and
        the package's training stages do).
        """
        if self.built:
            return
        super().build(var_list)
        self.momentums = [self.add_variable_from_reference(v, name="momentum") for v in var_list]
        self.velocities = [self.add_variable_from_reference(v, name="velocity") for v in var_list]
        strategy = tf.distribute.get_strategy()
        # update_step receives the tf.Variable of one device; map each to its moments there.
        for variable, m, v in zip(var_list, self.momentums, self.velocities):
            for local, local_m, local_v in zip(*(_local_variables(x, strategy) for x in (variable, m, v))):
                self._moments.by_variable[id(local)] = (local, local_m, local_v)

    def update_step(self, gradient: Any, variable: tf.Variable, learning_rate: Any) -> None:
        moments = self._moments.get(variable)
        if moments is None:
            raise RuntimeError(f"{self.name}: no moments for variable {variable.name!r}; the optimizer was built for "
                               "other variables, or outside the tf.distribute strategy scope they belong to. Build it "
                               "with optimizer.build(model.trainable_variables) under strategy.scope().")
        m, v = moments
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=m.handle, v=v.handle,
            beta1_power=tf.pow(tf.constant(self.beta_1, dtype), step),
            beta2_power=tf.pow(tf.constant(self.beta_2, dtype), step),
            lr=tf.cast(learning_rate, dtype), beta1=tf.constant(self.beta_1, dtype),
            beta2=tf.constant(self.beta_2, dtype), epsilon=tf.constant(self.epsilon, dtype),
            # A gather's gradient arrives as IndexedSlices; Adam's moments decay everywhere anyway.
            grad=tf.cast(tf.convert_to_tensor(gradient), dtype))

    def get_config(self) -> dict:
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}
