"""Decoding a CAVACHON model's posterior: normalised expression and posterior predictive draws.

These implement :meth:`~cavachon_like.model.base.MultimodalModel.get_normalized_expression`
and :meth:`~cavachon_like.model.base.MultimodalModel.posterior_predictive_sample` for
:class:`~cavachon_like.CAVACHON`. They run eagerly, batch by batch, so memory is one
batch of cells plus the returned array. :func:`averaged_mean` decodes many draws and batch
rows of the same cells in a few stacked decoder calls (cross-modal prediction uses it).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any

import numpy as np
import tensorflow as tf


def batch_codes(model: Any, data: Any, modality: str, transform_batch: Any) -> np.ndarray | None:
    """One-hot batch rows to decode with: ``None`` keeps each cell's own batch.

    ``"all"`` gives every combination present in ``data``; a mapping
    ``{column: category}`` gives that single batch.
    """
    if transform_batch is None:
        return None
    categories = model.batch_categories[modality]
    if isinstance(transform_batch, str):
        if transform_batch != "all":
            raise ValueError(f"transform_batch must be None, 'all' or {{column: category}}, got {transform_batch!r}.")
        codes = np.unique(data.modality(modality).batch_one_hot(categories), axis=0)
        return codes if codes.shape[1] else np.zeros((1, 0), np.float32)
    if not isinstance(transform_batch, Mapping):
        raise TypeError(f"transform_batch must be None, 'all' or {{column: category}}, got {transform_batch!r}.")
    if set(transform_batch) != set(categories):
        raise ValueError(f"transform_batch for modality {modality!r} must name exactly its batch columns "
                         f"{list(categories)}, got {list(transform_batch)}.")
    parts = []
    for column, values in categories.items():
        values = [str(v) for v in values]
        wanted = str(transform_batch[column])
        if wanted not in values:
            raise ValueError(f"batch column {column!r} of modality {modality!r} has no category {wanted!r}; "
                             f"the model knows {values}.")
        parts.append(np.eye(len(values), dtype=np.float32)[values.index(wanted)])
    return np.concatenate(parts)[None, :] if parts else np.zeros((1, 0), np.float32)


def expression(likelihood: Any, library_size: float, log1p: bool = False, depth: np.ndarray | None = None,
               ) -> Callable[[dict[str, tf.Tensor]], tf.Tensor]:
    """What prediction reports of decoder heads ``raw`` (rows: the same ``n`` cells, repeated):
    the :meth:`~cavachon_like.distributions.Likelihood.normalized_mean` per ``library_size``,
    or with ``log1p`` the expected log-normalised value of counts drawn at each cell's
    ``depth`` (``(n,)``, repeated with the rows; :meth:`~cavachon_like.distributions.Likelihood.expected_log1p`)."""
    if not log1p:
        return partial(likelihood.normalized_mean, scale=library_size)

    def expected(raw: dict[str, tf.Tensor]) -> tf.Tensor:
        rows = int(tf.shape(next(iter(raw.values())))[0])
        return tf.constant(likelihood.expected_log1p(raw, np.tile(depth, rows // len(depth)), library_size), tf.float32)
    return expected


def averaged_mean(decoder: Any, statistic: Callable[[dict[str, tf.Tensor]], tf.Tensor], z_hat: tf.Tensor,
                  rows: tf.Tensor, batch_size: int) -> np.ndarray:
    """A statistic of the decoded heads (:func:`expression`) averaged over latent draws and batch
    rows: ``mean_s mean_r statistic(decoder(z_hat[s], rows[r]))``, cells x features, float32.

    ``z_hat`` is ``(S, n, d)`` (``S`` draws of the same ``n`` cells) and ``rows`` ``(R, n, B)``
    (``R`` one-hot batch rows per cell). Instead of ``S * R`` decoder calls of ``n`` rows each,
    the ``(draw, row)`` pairs are stacked along the batch axis, ``max(1, batch_size // n)`` pairs
    per call, so a call decodes at most ``max(batch_size, n)`` rows and memory stays bounded by
    ``batch_size``. The sums run in the order of the one-call-per-pair loop (rows within a draw,
    then draws), so the result equals it to float rounding.
    """
    n_draws, n = int(z_hat.shape[0]), int(z_hat.shape[1])
    n_rows = int(rows.shape[0])
    pairs = [(s, r) for s in range(n_draws) for r in range(n_rows)]
    per_call = max(1, int(batch_size) // max(n, 1))
    total = draw_sum = None
    for start in range(0, len(pairs), per_call):
        chunk = pairs[start:start + per_call]
        z = tf.reshape(tf.gather(z_hat, [s for s, _ in chunk]), [len(chunk) * n, -1])
        batch = tf.reshape(tf.gather(rows, [r for _, r in chunk]), [len(chunk) * n, -1])
        decoded = tf.reshape(statistic(decoder(z, batch)), [len(chunk), n, -1])
        first = 0
        while first < len(chunk):  # the pairs of one draw at a time
            draw = chunk[first][0]
            last = first
            while last < len(chunk) and chunk[last][0] == draw:
                last += 1
            part = tf.reduce_sum(decoded[first:last], axis=0)
            draw_sum = part if draw_sum is None else draw_sum + part
            if chunk[last - 1][1] == n_rows - 1:  # every row of this draw decoded
                total = draw_sum / n_rows if total is None else total + draw_sum / n_rows
                draw_sum = None
            first = last
    return tf.cast(total / n_draws, tf.float32).numpy()


def _positions(data: Any, indices: Any) -> np.ndarray:
    return np.arange(data.n_obs) if indices is None else np.asarray(indices, dtype=np.int64)


def _posterior_batches(model: Any, data: Any, component: str, cells: np.ndarray, sample: bool, seed: int,
                       batch_size: int, decode: bool = False) -> Iterator[tuple[dict, dict]]:
    """Per batch of ``cells`` (in order), the inputs and the outputs of ``component`` and
    its ancestors; posterior samples use standard normal noise drawn from ``seed``."""
    closure = model.graph.closure([component])
    rng = np.random.default_rng(seed)
    dataset = model.make_dataset(data, batch_size=batch_size, shuffle=False, indices=cells)
    for inputs in dataset:
        n = int(tf.shape(next(iter(inputs["batch"].values())))[0])
        noise = None
        if sample:
            noise = {c: tf.constant(rng.standard_normal((n, model.components[c].latent_dim)), tf.float32)
                     for c in closure}
        outputs = model(inputs, training=False, sample=sample, components=[component], decode=decode, noise=noise)
        yield inputs, outputs


def normalized_expression(model: Any, data: Any, modality: str, indices: Any = None, library_size: float = 1e4,
                          transform_batch: Any = None, n_samples: int | None = None, return_samples: bool = False,
                          seed: int = 0, batch_size: int = 1024) -> np.ndarray:
    """See :meth:`~cavachon_like.model.base.MultimodalModel.get_normalized_expression`."""
    component = model.graph.component_of(modality)
    module = model.components[component]
    decoder, likelihood = partial(module.decode, modality), module.likelihoods[modality]
    codes = batch_codes(model, data, modality, transform_batch)
    cells = _positions(data, indices)
    if n_samples is not None and int(n_samples) < 1:
        raise ValueError(f"n_samples must be None (posterior mean) or a positive integer, got {n_samples}.")
    draws = []
    for s in range(1 if n_samples is None else int(n_samples)):
        parts = []
        for inputs, outputs in _posterior_batches(model, data, component, cells, n_samples is not None, seed + s,
                                                  batch_size):
            z_hat = outputs[component]["z_hat"]
            own = None
            if codes is None:  # each cell's own batch (and, with a covariate model, its own covariate latents)
                rows, own = [inputs["batch"][modality]], outputs[component].get("covariates")
            else:
                rows = [tf.tile(tf.constant(code[None, :], tf.float32), [tf.shape(z_hat)[0], 1]) for code in codes]
            decoded = [likelihood.normalized_mean(decoder(z_hat, batch, own), library_size) for batch in rows]
            parts.append(tf.cast(tf.add_n(decoded) / len(decoded), tf.float32).numpy())
        n_features = int(model.modality_specs[modality]["n_features"])
        draws.append(np.concatenate(parts) if parts else np.zeros((0, n_features), np.float32))
    stacked = np.stack(draws)
    return stacked if return_samples else stacked.mean(axis=0)


def predictive_sample(model: Any, data: Any, modality: str, indices: Any = None, n_samples: int = 1, seed: int = 0,
                      batch_size: int = 1024) -> np.ndarray:
    """See :meth:`~cavachon_like.model.base.MultimodalModel.posterior_predictive_sample`."""
    component = model.graph.component_of(modality)
    module = model.components[component]
    cells = _positions(data, indices)
    if int(n_samples) < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples}.")
    draws = []
    for s in range(int(n_samples)):
        parts = []
        for b, (_, outputs) in enumerate(_posterior_batches(model, data, component, cells, True, seed + s,
                                                            batch_size, decode=True)):
            params = module.parameters_of(outputs[component])[modality]
            stateless = tf.constant([seed + s, b], dtype=tf.int32)
            parts.append(tf.cast(module.likelihoods[modality].distribution(params).sample(seed=stateless),
                                 tf.float32).numpy())
        draws.append(np.concatenate(parts))
    return np.stack(draws)
