"""Mixture priors fitted to the latents after pre-training (VaDE's initialisation)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

#: Cells whose latents the GMM is fitted to; more adds time, not accuracy, for K <= 100.
MAX_FIT_CELLS = 20_000


def fit_priors(model: Any, components: Sequence[str], dataset: tf.data.Dataset, seed: int | None = 0,
               max_cells: int = MAX_FIT_CELLS) -> None:
    """Initialise ``components``' priors from posterior samples of up to ``max_cells`` cells.

    Each prior's ``initialize_from_samples`` sees one sample of q(z|x) per cell (a GMM
    fit for the mixture prior). Samples rather than means, so that each fitted
    component is at least as wide as the posteriors it covers: fitted to the means,
    the mixture's variances come out far below the posterior variances and the KL
    term jumps by an order of magnitude when the ELBO phase starts.
    """
    rng = np.random.default_rng(seed)
    samples: dict[str, list[np.ndarray]] = {c: [] for c in components}
    seen = 0
    for batch in dataset:
        outputs = model(batch, training=False, components=list(components), decode=False)
        for c in components:
            mean = np.asarray(outputs[c]["z_mean"], dtype=np.float64)
            std = np.sqrt(np.asarray(outputs[c]["z_var"], dtype=np.float64))
            samples[c].append(mean + std * rng.standard_normal(mean.shape))
        seen += len(mean)
        if seen >= max_cells:
            break
    for c in components:
        model.components[c].prior.initialize_from_samples(np.concatenate(samples[c])[:max_cells], seed=seed)
