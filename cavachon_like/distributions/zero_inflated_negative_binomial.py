"""Zero-inflated negative binomial likelihood, the paper's choice for gene expression."""
from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from .likelihood import Likelihood, float32_heads
from .negative_binomial import (
    negative_binomial,
    negative_binomial_log_prob,
    negative_binomial_parameters,
)

tfd = tfp.distributions


class ZeroInflatedNegativeBinomial(Likelihood):
    """Negative binomial mixed with a point mass at zero (dropout), per feature.

    ``x = 0`` with probability ``pi = sigmoid(dropout_logits)``, otherwise
    ``x ~ NB(mu, theta)`` as in :class:`~cavachon_like.distributions.NegativeBinomial`.
    :meth:`log_prob` is evaluated in log space as scVI's ``log_zinb_positive`` does;
    :meth:`distribution` is TFP's zero-``Inflated`` negative binomial with the same
    parameters, for sampling; :meth:`mean` is also computed in closed form.

    Constrained parameters: ``{"log_mean", "dispersion", "dropout_logits"}``, each
    ``(B, F)``.

    Parameters
    ----------
    eps
        Added to ``softplus(dispersion)`` so that ``theta`` stays positive.
    """

    alias = "zinb"
    support = "counts"
    parameters = ("logits", "dispersion", "dropout_logits")
    input_transform = "log1p_normalize"
    uses_library_size = True

    def __init__(self, eps: float = 1e-8) -> None:
        self.eps = float(eps)

    def constrain(self, raw: dict[str, tf.Tensor], library_size: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        logits, dispersion, dropout_logits = float32_heads(raw, self.parameters)
        return {
            **negative_binomial_parameters(logits, dispersion, library_size, self.eps),
            "dropout_logits": dropout_logits,
        }

    def distribution(self, params: dict[str, tf.Tensor]) -> tfd.Distribution:
        zinb = tfd.Inflated(
            negative_binomial(params["log_mean"], params["dispersion"]),
            # Probabilities rather than logits: TFP 0.25 turns ``inflated_loc_logits=l``
            # into the categorical logits ``[l, -l]``, i.e. a zero mass of sigmoid(2 l).
            inflated_loc_probs=tf.sigmoid(params["dropout_logits"]),
        )
        return tfd.Independent(zinb, reinterpreted_batch_ndims=1)

    def log_prob(self, x: tf.Tensor, params: dict[str, tf.Tensor]) -> tf.Tensor:
        # TFP's mixture goes through probabilities, and log(1 - pi) is -inf once pi rounds
        # to 1; these log-space closed forms stay finite, with their gradients, for any logits.
        x = self.target(x)
        dropout_logits = params["dropout_logits"]
        dispersion = params["dispersion"]
        # log NB(0) = theta * log(theta / (theta + mu)) = theta * log_sigmoid(-nb_logits).
        log_nb_zero = dispersion * tf.math.log_sigmoid(tf.math.log(dispersion) - params["log_mean"])
        # log(pi + (1 - pi) NB(0)) = softplus(log NB(0) - l) - softplus(-l) for pi = sigmoid(l).
        log_zero = tf.nn.softplus(log_nb_zero - dropout_logits) - tf.nn.softplus(-dropout_logits)
        log_nb = negative_binomial_log_prob(x, params["log_mean"], dispersion, log_zero=log_nb_zero)
        log_non_zero = tf.math.log_sigmoid(-dropout_logits) + log_nb
        return tf.reduce_sum(tf.where(x == 0, log_zero, log_non_zero), axis=-1)

    def mean(self, params: dict[str, tf.Tensor]) -> tf.Tensor:
        # (1 - pi) mu from the logits: TFP's ``1 - probs`` rounds to 0 once pi > 1 - 6e-8.
        return tf.sigmoid(-params["dropout_logits"]) * tf.exp(params["log_mean"])
