"""Importance-sampled marginal log-likelihood ``log p(x)`` of held-out cells.

With the encoders as proposal (as paper 004 and scvi-tools compute it),

``log p(x) ~= logsumexp_s [log p(x | z_s) + log p(z_s) - log q(z_s | x)] - log S``

where ``z_s`` draws every component's latent from its posterior, the decoders see the
``z_hat`` those draws give through the DAG, ``p(z)`` is each component's prior and
``q`` its Gaussian posterior. The estimate is a lower bound that tightens as ``S``
grows (S = 1 is the ELBO in expectation), so compare configurations at the same ``S``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from ..distributions.prior import diagonal_gaussian_log_prob


def marginal_log_likelihood(model: Any, data: Any, n_samples: int = 100, indices: Any = None, seed: int = 0,
                            batch_size: int = 256) -> np.ndarray:
    """See :meth:`~cavachon_like.model.base.MultimodalModel.marginal_log_likelihood`."""
    if int(n_samples) < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples}.")
    quantised = [c for c in model.latent_names if model.components[c].n_codes]
    if quantised:
        raise ValueError(f"components {quantised} have a quantised latent (posterior: vq), a point mass with no "
                         "density: importance sampling has no proposal to weigh. Compare such models by their "
                         "held-out reconstruction (the *_nll terms of model.evaluate(model.make_dataset(data))) instead.")
    learned = [c for c in model.latent_names if model.components[c].posterior == "representation"]
    if learned:
        raise ValueError(f"components {learned} learn a point latent per cell (posterior: representation, maximum a "
                         "posteriori) with no posterior distribution to importance-sample. Compare such models by "
                         "their held-out reconstruction (the *_nll terms of model.evaluate(model.make_dataset(data))).")
    cells = np.arange(data.n_obs) if indices is None else np.asarray(indices, dtype=np.int64)
    dataset = model.make_dataset(data, batch_size=batch_size, shuffle=False, indices=cells)
    rng = np.random.default_rng(seed)
    parts = []
    for inputs in dataset:
        n = int(tf.shape(next(iter(inputs["batch"].values())))[0])
        log_w = []
        for _ in range(int(n_samples)):
            noise = {c: tf.constant(rng.standard_normal((n, model.components[c].latent_dim)), tf.float32)
                     for c in model.latent_names}
            outputs = model(inputs, training=False, sample=True, noise=noise)
            total = tf.zeros((n,), tf.float32)
            for name in model.latent_names:
                component, out = model.components[name], outputs[name]
                z = tf.cast(out["z"], tf.float32)
                log_q = diagonal_gaussian_log_prob(z, tf.cast(out["z_mean"], tf.float32),
                                                   tf.cast(out["z_var"], tf.float32))
                nll = component.loss_terms(inputs["x"], out)["nll"]
                total += component.prior.log_prob(z) - log_q - tf.add_n([tf.cast(v, tf.float32) for v in nll.values()])
            log_w.append(total)
        stacked = tf.stack(log_w).numpy().astype(np.float64)
        parts.append(np.logaddexp.reduce(stacked, axis=0) - np.log(int(n_samples)))
    return np.concatenate(parts)
