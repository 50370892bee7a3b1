"""Pseudocells by latent traversal (paper 003, scMM): decode a path along each latent dimension.

For a latent ``z`` of dimension ``D``, let ``m_d`` and ``s_d`` be the mean and standard deviation
over the cells of the posterior means of dimension ``d``. The pseudocell of dimension ``d`` at
step ``t`` (in units of ``s_d``) is ``z = m`` with ``z_d = m_d + t * s_d``: one dimension moves,
the others stay at the population's centre. The component's parents enter as the population
mean of what it conditions on (``z_hat`` or ``z``), so every pseudocell has the same, typical
ancestry. Each pseudocell is decoded into every modality of the component, averaging the decoded
means over the batches (as ``get_normalized_expression(..., transform_batch="all")``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from .decoding import _posterior_batches, batch_codes


@dataclass(frozen=True)
class LatentTraversal:
    """Pseudocells decoded along each dimension of one latent.

    Attributes
    ----------
    latent
        Name of the traversed latent (``obsm["z_<latent>"]``).
    steps
        Step values ``t`` in units of each dimension's standard deviation, increasing,
        shape ``(n_steps,)``.
    decoded
        ``{modality: array (latent_dim, n_steps, n_features)}``: decoded means at
        ``library_size`` (counts per ``library_size`` for count modalities, probability of
        detection for binary ones) of every modality the latent decodes.
    features
        ``{modality: feature names}``, in the order of the last axis of ``decoded``.
    center, scale
        ``m`` and ``s``, shape ``(latent_dim,)``: mean and standard deviation over the cells
        of the posterior means; dimension ``d`` at step ``t`` is ``m_d + t * s_d``.
    library_size
        Library size the modalities were decoded at.
    supports
        ``{modality: "counts" | "binary" | "real"}``, what each likelihood models; it sets the
        scale features are compared on (:meth:`transformed`).
    batches
        ``{modality: one-hot rows}``: the batches the decoded means average over.
    """

    latent: str
    steps: np.ndarray
    decoded: dict[str, np.ndarray]
    features: dict[str, pd.Index]
    center: np.ndarray
    scale: np.ndarray
    library_size: float = 1e4
    supports: dict[str, str] = field(default_factory=dict)
    batches: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def modalities(self) -> list[str]:
        """Modalities decoded from the latent."""
        return list(self.decoded)

    @property
    def latent_dim(self) -> int:
        """Dimension of the traversed latent (one traversal per dimension)."""
        return len(self.center)

    def transformed(self, modality: str) -> np.ndarray:
        """``decoded[modality]`` on the scale features are compared on: ``log1p`` of counts per
        ``library_size`` and of detection probabilities (as analyses of normalised data do);
        real-valued modalities as decoded, which may be negative."""
        decoded = np.asarray(self.decoded[modality], dtype=np.float64)
        return decoded if self.supports.get(modality) == "real" else np.log1p(decoded)

    def transform_label(self, modality: str) -> str:
        """What :meth:`transformed` holds, for axis labels."""
        support = self.supports.get(modality, "counts")
        if support == "real":
            return f"decoded {modality}"
        if support == "binary":
            return f"log1p(P({modality} detected))"
        return f"log1p({modality} per {self.library_size:g})"

    def latent_values(self, dim: int) -> np.ndarray:
        """The traversed coordinate of dimension ``dim`` at each step, in latent units."""
        return self.center[dim] + self.steps * self.scale[dim]


def traversal_points(center: np.ndarray, scale: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Latent points of every pseudocell, shape ``(latent_dim, n_steps, latent_dim)``."""
    dims = len(center)
    points = np.broadcast_to(center, (dims, len(steps), dims)).copy()
    for d in range(dims):
        points[d, :, d] = center[d] + steps * scale[d]
    return points


def _population(model: Any, data: Any, latent: str, batch_size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Posterior means of ``latent`` for every cell and the population mean of each parent's
    conditioning latent, in one encoding pass (no decoding)."""
    module = model.components[latent]
    cells = np.arange(data.n_obs)
    means, parents = [], [[] for _ in module.parents]
    for _, outputs in _posterior_batches(model, data, latent, cells, False, 0, batch_size):
        means.append(tf.cast(outputs[latent]["z_mean"], tf.float32).numpy())
        for i, p in enumerate(module.parents):
            parents[i].append(tf.cast(outputs[p][module.conditioned_on], tf.float32).numpy())
    return np.concatenate(means), [np.concatenate(p).mean(axis=0) for p in parents]


def latent_traversal(model: Any, data: Any, latent: str, n_steps: int = 21, span: float = 5.0,
                     library_size: float = 1e4, transform_batch: Any = "all",
                     batch_size: int = 1024) -> LatentTraversal:
    """See :meth:`~cavachon_like.model.base.MultimodalModel.latent_traversal`."""
    if latent not in model.latent_names:
        raise KeyError(f"the model has no latent {latent!r}; it has {model.latent_names}.")
    if int(n_steps) < 2:
        raise ValueError(f"n_steps must be at least 2 (the two ends of the traversal), got {n_steps}.")
    if not np.isfinite(span) or span <= 0:
        raise ValueError(f"span must be a positive number of standard deviations, got {span}.")
    if transform_batch is None:
        # A pseudocell is no cell: it has no batch of its own to decode with.
        raise ValueError("a pseudocell has no batch of its own: pass transform_batch='all' (the average over "
                         "the batches in the data) or {batch column: category}.")
    if data.n_obs < 2:
        raise ValueError(f"the traversal is scaled by the spread of the cells' latents: it needs at least 2 "
                         f"cells, got {data.n_obs}.")
    module = model.components[latent]
    codes = {m: batch_codes(model, data, m, transform_batch) for m in model.latent_modalities(latent)}
    z_means, parent_means = _population(model, data, latent, batch_size)
    center = z_means.mean(axis=0).astype(np.float32)
    scale = z_means.std(axis=0).astype(np.float32)
    steps = np.linspace(-float(span), float(span), int(n_steps)).astype(np.float32)
    dims, n = len(center), len(center) * int(n_steps)
    # Every pseudocell in one pass: latent_dim * n_steps rows is small (20 x 21 = 420 by default).
    z = tf.constant(traversal_points(center, scale, steps).reshape(n, dims), tf.float32)
    parents = [tf.constant(np.tile(p[None, :], (n, 1)), tf.float32) for p in parent_means]
    z_hat = module.hierarchical_encoder(z, parents)
    decoded = {}
    for m, rows in codes.items():
        decoder, likelihood = partial(module.decode, m), module.likelihoods[m]
        means = [likelihood.normalized_mean(decoder(z_hat, tf.tile(tf.constant(row[None, :], tf.float32), [n, 1])),
                                            library_size) for row in rows]
        values = tf.cast(tf.add_n(means) / len(means), tf.float32).numpy()
        decoded[m] = values.reshape(dims, int(n_steps), -1)
    return LatentTraversal(latent=latent, steps=steps, decoded=decoded,
                           features={m: pd.Index(data.mod[m].var_names) for m in codes}, center=center,
                           scale=scale, library_size=float(library_size),
                           supports={m: model.modality_support(m) for m in codes}, batches=codes)
