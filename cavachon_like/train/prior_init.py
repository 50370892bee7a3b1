"""Mixture priors fitted to the latents: after pre-training (VaDE's initialisation) and after each stage."""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)

#: Cells whose latents the GMM is fitted to; more adds time, not accuracy, for K <= 100.
MAX_FIT_CELLS = 20_000


def posteriors(model: Any, components: Sequence[str], dataset: tf.data.Dataset, max_cells: int | None = MAX_FIT_CELLS,
               dtype: Any = np.float64) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``(mean, var)`` of q(z|x) for each of ``components``, for the first ``max_cells`` cells of
    ``dataset`` (all of them with None), as ``dtype``."""
    means: dict[str, list[np.ndarray]] = {c: [] for c in components}
    variances: dict[str, list[np.ndarray]] = {c: [] for c in components}
    seen = 0
    # traced once (twice with a smaller last batch): an eager call per batch costs more than
    # the encoding itself on large data
    encode = tf.function(lambda batch: model(batch, training=False, components=list(components), decode=False))
    for batch in dataset:
        outputs = encode(batch)
        for c in components:
            means[c].append(np.asarray(outputs[c]["z_mean"], dtype=dtype))
            variances[c].append(np.asarray(outputs[c]["z_var"], dtype=dtype))
        seen += len(means[components[0]][-1])
        if max_cells is not None and seen >= max_cells:
            break
    return {c: (np.concatenate(means[c])[:max_cells], np.concatenate(variances[c])[:max_cells]) for c in components}


def fit_priors(model: Any, components: Sequence[str], dataset: tf.data.Dataset, seed: int | None = 0,
               max_cells: int = MAX_FIT_CELLS) -> None:
    """Initialise ``components``' priors from the posteriors of up to ``max_cells`` cells.

    Each prior's ``initialize_from_samples`` sees the posterior means of q(z|x), one point
    per cell (a GMM fit for the mixture prior); a prior that changed then takes one
    closed-form step of ``update_from_posteriors``, which keeps the clusters the fit found
    and widens each component by the posterior variances of its cells. Means, because
    one posterior sample per cell (what this fitted before) blurs small neighbouring cell
    types into one component: on SNARE-seq, at one seed in three, Pvalb, Sst and CGE
    interneurons shared a cluster (Pvalb F1 0.54); fitted to the means, Pvalb F1 is
    0.88-0.90 at seeds 0-2. The widening, because a GMM of the means alone has variances
    far below the posterior variances, and the KL term would jump by an order of
    magnitude when the ELBO phase starts.
    """
    for c, (mean, var) in posteriors(model, components, dataset, max_cells).items():
        prior = model.components[c].prior
        if prior.initialize_from_samples(mean, seed=seed):
            prior.update_from_posteriors(mean, var, max_iterations=1)


class PriorUpdate(keras.callbacks.Callback):
    """At the end of a phase, each prior's closed-form update for the training cells' posteriors.

    Put it after ``EarlyStopping`` (which restores the best weights in ``on_train_end``)
    and before the checkpoint recorder, so the update applies to the weights that are
    kept and is saved with them. ``before`` (e.g. fixing the cell order) runs first.

    Parameters
    ----------
    components
        Names of the components whose priors are updated.
    dataset
        The training cells.
    max_iterations
        Passed to :meth:`~cavachon_like.distributions.Prior.update_from_posteriors`.
    """

    def __init__(self, components: Sequence[str], dataset: tf.data.Dataset, max_iterations: int,
                 before: Callable[[], Any] | None = None, max_cells: int = MAX_FIT_CELLS) -> None:
        super().__init__()
        self.components = list(components)
        self.dataset = dataset
        self.max_iterations = int(max_iterations)
        self.before = before
        self.max_cells = max_cells

    def on_train_end(self, logs: dict | None = None) -> None:
        """Run ``before``, then update each component's prior from the posteriors of (at most
        ``max_cells``) training cells and log how far the KL term fell."""
        if self.before is not None:
            self.before()
        for c, (mean, var) in posteriors(self.model, self.components, self.dataset, self.max_cells).items():
            prior = self.model.components[c].prior
            term, before = _mean_prior_term(prior, mean, var)
            if prior.update_from_posteriors(mean, var, self.max_iterations):
                logger.info("prior of %r updated from %d cells' posteriors: %s %.3f -> %.3f per cell",
                            c, len(mean), term, before, _mean_prior_term(prior, mean, var)[1])


def _mean_prior_term(prior: Any, mean: np.ndarray, var: np.ndarray, chunk: int = 1024) -> tuple[str, float]:
    """The stage's prior term, averaged over cells, and its name: the KL term at the posterior
    means, or for point latents (zero variance: learned representations, which have no KL) the
    training loss's ``-log p(z)``. Computed ``chunk`` cells at a time: the mixture's KL has
    cells x clusters x dimensions temporaries, which for all cells at once would set the
    process' peak memory."""
    point = not var.any()
    total = 0.0
    for start in range(0, len(mean), chunk):
        z = tf.constant(mean[start:start + chunk], tf.float32)
        if point:
            total -= float(tf.reduce_sum(prior.log_prob(z)))
        else:
            kl, _ = prior.kl_divergence(z, tf.constant(var[start:start + chunk], tf.float32), z)
            total += float(tf.reduce_sum(kl))
    return ("-log p(z)" if point else "KL term"), total / max(len(mean), 1)
