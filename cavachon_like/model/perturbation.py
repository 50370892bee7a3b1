"""In-silico silencing of features (multiDGD's gene-to-peak association, paper 001 Fig. 6).

For a gene ``j`` and the cells that express it, the silenced profile sets ``x_j = 0``. The
loss of that profile on the silenced features alone, ``-log p(x_j = 0 | z)``, is
differentiated with respect to each cell's latent, and the latent takes one step of a fresh
Adam optimiser along it (``z_ko = z - lr * g / (|g| + eps)``, which is what a first Adam step
is). The cells' decoded target modality at ``z`` and at ``z_ko`` then differ by the change that
silencing ``j`` predicts: ``delta = mean(x_target | z) - mean(x_target | z_ko)`` (positive where
silencing lowers the prediction), averaged over the cells.

It applies where the silenced features and the target are decoded from one latent that is
inferred from the data (a joint component; with ``posterior: representation`` the latent of
each cell is its learned or inferred representation).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from ..nn import library_size as library_size_of

#: Cells per gene whose change is averaged (a seeded subsample of the cells that express it).
DEFAULT_MAX_CELLS = 500


def _feature_positions(names: pd.Index, features: Sequence[str], modality: str) -> np.ndarray:
    positions = names.get_indexer(list(features))
    missing = [f for f, p in zip(features, positions) if p < 0]
    if missing:
        raise KeyError(f"modality {modality!r} has no features {missing[:5]}"
                       + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "") + ".")
    return positions


def silencing_effects(model: Any, data: Any, genes: Sequence[str], source: str, target: str,
                      learning_rate: float = 0.01, library_size: float = 1e4, max_cells: int = DEFAULT_MAX_CELLS,
                      together: bool = False, seed: int = 0, batch_size: int = 256) -> pd.DataFrame:
    """The predicted change of every ``target`` feature when each of ``genes`` (features of
    ``source``) is silenced; see the module docstring.

    Parameters
    ----------
    learning_rate
        The size of the one Adam step (multiDGD takes its representation optimiser's, 1e-2).
    library_size
        Depth at which ``target`` is decoded, as in ``get_normalized_expression``.
    max_cells
        At most this many of the cells expressing a gene (a seeded subsample) enter its mean.
    together
        Silence all ``genes`` at once (one column, ``"+".join(genes)``) instead of one at a time.

    Returns
    -------
    pandas.DataFrame
        ``target`` features x silenced genes (or the one set): the mean change ``delta``; the
        number of cells behind each column is in ``attrs["n_cells"]``.
    """
    component = model.graph.component_of(source)
    module = model.components[component]
    if target not in module.modalities:
        raise ValueError(f"{source!r} and {target!r} must be decoded from one latent to silence one and read the "
                         f"other; {source!r} is in component {component!r} with {module.modalities}.")
    if module.posterior == "vq":
        raise ValueError(f"component {component!r} (posterior: {module.posterior}) has no continuous latent to step.")
    if source not in data.mod or target not in data.mod:
        raise ValueError(f"the data need both {source!r} and {target!r}; they have {list(data.mod)}.")
    positions = _feature_positions(data.mod[source].var_names, genes, source)
    groups = [positions] if together else [np.array([p]) for p in positions]
    labels = ["+".join(genes)] if together else list(genes)
    counts = data.mod[source].X
    rng = np.random.default_rng(seed)
    columns, n_cells = {}, {}
    for label, group in zip(labels, groups):
        expressing = np.flatnonzero(np.asarray(counts[:, group].sum(axis=1)).ravel() > 0)
        if expressing.size > max_cells:
            expressing = np.sort(rng.choice(expressing, max_cells, replace=False))
        n_cells[label] = int(expressing.size)
        if not expressing.size:
            columns[label] = np.zeros(data.mod[target].n_vars, np.float32)
            continue
        columns[label] = _mean_change(model, module, data, expressing, group, source, target, learning_rate,
                                      library_size, batch_size)
    table = pd.DataFrame(columns, index=data.mod[target].var_names.copy())
    table.attrs["n_cells"] = n_cells
    return table


def _mean_change(model: Any, module: Any, data: Any, cells: np.ndarray, group: np.ndarray, source: str,
                 target: str, learning_rate: float, library_size: float, batch_size: int) -> np.ndarray:
    """Mean over ``cells`` of ``mean(target | z) - mean(target | z_ko)`` for the silenced ``group``."""
    name = module.name
    group = tf.constant(group, tf.int32)
    total = np.zeros(data.mod[target].n_vars, np.float64)
    source_lik, target_lik = module.likelihoods[source], module.likelihoods[target]
    n_features = int(module.modality_specs[source]["n_features"])
    for inputs in model.make_dataset(data, batch_size=batch_size, shuffle=False, indices=cells):
        outputs = model(inputs, training=False, sample=False, components=[name], decode=False)[name]
        z, covariates = tf.cast(outputs["z"], tf.float32), outputs.get("covariates")  # the step moves z alone
        parents = []
        if module.parents:
            ancestors = model(inputs, training=False, sample=False, components=module.parents, decode=False)
            parents = [ancestors[p][module.conditioned_on] for p in module.parents]
        x = inputs["x"][source]
        with tf.GradientTape() as tape:
            tape.watch(z)
            z_hat = module.hierarchical_encoder(tf.cast(z, module.compute_dtype), parents)
            params = source_lik.constrain(module.decode(source, z_hat, inputs["batch"][source], covariates),
                                         library_size_of(x))
            silenced = {k: tf.gather(v, group, axis=-1) if v.shape.rank and v.shape[-1] == n_features else v
                        for k, v in params.items()}
            loss = -tf.reduce_sum(source_lik.log_prob(tf.zeros([tf.shape(z)[0], len(group)]), silenced))
        gradient = tape.gradient(loss, z)
        z_ko = z - learning_rate * gradient / (tf.abs(gradient) + 1e-8)

        decoded = [tf.cast(target_lik.normalized_mean(module.decode(
            target, module.hierarchical_encoder(tf.cast(latent, module.compute_dtype), parents),
            inputs["batch"][target], covariates), library_size), tf.float32) for latent in (z, z_ko)]
        total += tf.reduce_sum(decoded[0] - decoded[1], axis=0).numpy()
    return (total / len(cells)).astype(np.float32)
