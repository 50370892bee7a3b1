"""Hierarchical encoder: f^(r) and f^(b) of Eq. 1-2 (IncorporateParents)."""
from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from .._registry import Registry, register_subclass

#: Hierarchical encoders by alias (``hierarchical_encoder:`` of a component in YAML); a
#: subclass of :class:`HierarchicalEncoder` that sets ``alias`` joins it.
#:
#: :meta hide-value:
HIERARCHICAL_ENCODERS = Registry("hierarchical encoder")


@keras.saving.register_keras_serializable(package="cavachon_like")
class HierarchicalEncoder(keras.layers.Layer):
    """Combines a component's own z with its parents' latents into z_hat.

    ``z_tilde = f_r(z)`` and ``z_hat = f_b([parents; alpha * z_tilde])`` with linear
    ``f_r``, ``f_b`` (Eq. 2, Table S1). The parents' tensors are their ``z_hat``
    (the paper's default, so z_hat depends on all ancestors) or their ``z``
    (AlternativeIncorporateParents, Appendix C); the component chooses which.

    ``alpha`` is a non-trainable blend weight: progressive training ramps it from 0
    to 1 so a new component is faded in on top of its frozen ancestors (Sec. 2.3),
    and integrated gradients (Appendix G, Eq. S6) integrate along the same path.

    Parameters
    ----------
    latent_dim
        Dimension of z and z_hat.
    """

    alias = "linear"

    def __init__(self, latent_dim: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        self.f_r = keras.layers.Dense(self.latent_dim, name="f_r")
        self.f_b = keras.layers.Dense(self.latent_dim, name="f_b")

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        register_subclass(HIERARCHICAL_ENCODERS, cls)

    def build(self, z_shape: Sequence[int | None], parents_shape: Sequence[Sequence[int | None]] = ()) -> None:
        """Build from the shapes of :meth:`call`'s ``z`` ``(B, d)`` and ``parents`` list.

        ``alpha`` has no weights of its own, so its shape is not needed.
        """
        self.f_r.build(tuple(z_shape))
        self.f_b.build((None, sum(int(shape[-1]) for shape in parents_shape) + self.latent_dim))
        self.alpha = self.add_weight(name="alpha", shape=(), initializer="ones", trainable=False)

    def call(self, z: tf.Tensor, parents: Sequence[tf.Tensor] = (), alpha: tf.Tensor | None = None) -> tf.Tensor:
        """``z_hat`` ``(B, d)``; ``alpha`` (a scalar or broadcastable to ``(B, d)``) overrides
        the stored blend weight (attribution integrates along it)."""
        blend = self.alpha if alpha is None else alpha
        z_tilde = blend * self.f_r(z)
        return self.f_b(tf.concat([*parents, z_tilde], axis=-1) if parents else z_tilde)

    def get_config(self) -> dict:
        return {**super().get_config(), "latent_dim": self.latent_dim}


HIERARCHICAL_ENCODERS.register(HierarchicalEncoder.alias, HierarchicalEncoder)
