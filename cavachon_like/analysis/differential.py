"""Bayesian differential analysis between groups of cells (paper Appendix H, Eq. S7)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import tensorflow as tf

#: |Bayes factor| above which a feature is called differential: log(p / (1 - p)) = 3
#: is p ~ 0.95, "strong" evidence on Kass and Raftery's scale.
DEFAULT_THRESHOLD = 3.0

GroupSpec = str | Sequence[str] | Sequence[int] | Sequence[bool] | np.ndarray | None


def _as_positions(spec: Any, data: Any, what: str) -> np.ndarray:
    """Cell positions from a boolean mask, integer positions or cell names."""
    values = np.asarray(spec)
    if values.dtype == bool:
        if values.shape != (data.n_obs,):
            raise ValueError(f"{what}: a boolean mask needs one entry per cell ({data.n_obs}), got {values.shape}.")
        return np.flatnonzero(values)
    if np.issubdtype(values.dtype, np.integer):
        if values.size and (values.min() < 0 or values.max() >= data.n_obs):
            raise ValueError(f"{what}: cell positions must lie in [0, {data.n_obs}).")
        return np.unique(values)
    positions = data.obs_names.get_indexer(values.astype(str))
    if (positions < 0).any():
        missing = values[positions < 0][:5].tolist()
        raise ValueError(f"{what}: {int((positions < 0).sum())} cell names are not in the data, e.g. {missing}.")
    return np.unique(positions)


def resolve_groups(
    data: Any, group_a: GroupSpec = None, group_b: GroupSpec = None, groupby: str | None = None
) -> tuple[np.ndarray, np.ndarray, str, str]:
    """Cell positions and names of the two groups.

    - ``groupby`` alone: an obs column with exactly two values, A = the first category.
    - ``groupby`` with ``group_a`` (a value or list of values) and optionally
      ``group_b``: cells with those values; B defaults to every other cell.
    - no ``groupby``: ``group_a``/``group_b`` are boolean masks, integer positions or
      cell names; B defaults to every other cell.
    """
    if groupby is not None:
        column = data.obs_column(groupby)
        values = column.astype(str).to_numpy()
        present = [str(v) for v in (column.cat.categories if hasattr(column, "cat") else pd.unique(column))
                   if str(v) in set(values)]
        if group_a is None:
            if len(present) != 2:
                raise ValueError(f"obs column {groupby!r} has {len(present)} values {present[:10]}; name group_a "
                                 "(and optionally group_b) to compare two of them.")
            group_a, group_b = present
        wanted_a = [group_a] if isinstance(group_a, str) else [str(v) for v in group_a]
        wanted_b = None if group_b is None else ([group_b] if isinstance(group_b, str) else [str(v) for v in group_b])
        for wanted in (wanted_a, wanted_b or []):
            unknown = [v for v in wanted if v not in present]
            if unknown:
                raise ValueError(f"obs column {groupby!r} has no cells with {unknown}; its values are {present}.")
        a = np.flatnonzero(np.isin(values, wanted_a))
        b = np.flatnonzero(~np.isin(values, wanted_a) if wanted_b is None else np.isin(values, wanted_b))
        name_a = ",".join(wanted_a)
        name_b = "rest" if wanted_b is None else ",".join(wanted_b)
    else:
        if group_a is None:
            raise ValueError("give group_a (cells, a mask or positions), or groupby with the group values.")
        a = _as_positions(group_a, data, "group_a")
        b = np.setdiff1d(np.arange(data.n_obs), a) if group_b is None else _as_positions(group_b, data, "group_b")
        name_a, name_b = "A", "rest" if group_b is None else "B"
    if not len(a) or not len(b):
        raise ValueError(f"both groups need cells; group {name_a!r} has {len(a)}, group {name_b!r} has {len(b)}.")
    overlap = np.intersect1d(a, b)
    if overlap.size:
        raise ValueError(f"{overlap.size} cells are in both groups (e.g. {data.obs_names[overlap[0]]!r}).")
    return a, b, name_a, name_b


def _expressed(data: Any, modality: str, cells: np.ndarray) -> np.ndarray:
    """Fraction of the cells with a non-zero value, per feature (no densifying)."""
    x = data.mod[modality].X[cells]
    nonzero = (x != 0).sum(axis=0) if sp.issparse(x) else (np.asarray(x) != 0).sum(axis=0)
    return np.asarray(nonzero).ravel() / len(cells)


def differential_analysis(
    model: Any,
    data: Any,
    modality: str,
    group_a: GroupSpec = None,
    group_b: GroupSpec = None,
    groupby: str | None = None,
    n_samples: int = 5000,
    batch_size: int = 512,
    scale: float = 1e4,
    threshold: float = DEFAULT_THRESHOLD,
    delta: float = 0.0,
    seed: int = 0,
    eps: float = 1e-8,
) -> pd.DataFrame:
    """Bayes factors of ``rho_A > rho_B`` for every feature of ``modality`` (Eq. S7).

    ``n_samples`` pairs of cells ``(i, j)`` are drawn with replacement from groups A
    and B; for each, a latent is sampled from the posterior (the component and its
    ancestors, reproducibly from ``seed``) and decoded under every batch present in
    the data, and the decoded means (at library size ``scale``) are averaged over
    batches: ``E_B[rho]``, which removes batch effects from the comparison.
    ``P(A > B)`` is the fraction of pairs where ``rho_i > rho_j`` and
    ``K(A > B) = log P(A > B) - log P(B >= A)``. With ``delta > 0`` the
    hypotheses ask for a margin, ``log2(rho_i / rho_j) > delta`` (scVI's "change"
    mode), which stops the small compositional shifts of a softmax decoder from
    counting as differential. Pairs are processed
    ``batch_size`` at a time, so memory is ``batch_size x features``.

    Parameters
    ----------
    model
        Trained :class:`~cavachon_like.CAVACHON`.
    data
        Its :class:`~cavachon_like.MultiModality`.
    modality
        Modality whose features are compared (genes or peaks).
    group_a, group_b, groupby
        The groups; see :func:`resolve_groups`.
    n_samples
        Monte Carlo pairs.
    batch_size
        Pairs per forward pass.
    scale
        Library size of the compared means (counts per ``scale``; ignored by
        likelihoods without library size).
    threshold
        ``|K|`` from which ``significant`` is set.
    delta
        Log2 fold-change margin of the hypotheses (0: the paper's ``rho_A > rho_B``).
    seed
        Seeds pair draws and posterior samples.
    eps
        Added to probabilities before logs and to means before fold changes.

    Returns
    -------
    pandas.DataFrame
        One row per feature, most up-regulated in A first: ``prob_a_gt_b``,
        ``prob_b_gt_a``, ``bayes_factor_a_gt_b``, ``bayes_factor_b_gt_a``,
        ``lfc_mean`` (mean log2 of ``rho_i / rho_j``), ``mean_a``, ``mean_b``
        (group means of the decoded values), ``expressed_a``, ``expressed_b``
        (observed fraction of non-zero cells) and ``significant``. ``attrs`` holds
        the group names and sizes.
    """
    a, b, name_a, name_b = resolve_groups(data, group_a, group_b, groupby)
    component = model.graph.component_of(modality)
    module = model.components[component]
    closure = model.graph.closure([component])
    rng = np.random.default_rng(seed)
    n_samples = int(n_samples)
    if n_samples < 1:
        raise ValueError(f"n_samples must be positive, got {n_samples}.")
    pairs_a, pairs_b = rng.choice(a, n_samples), rng.choice(b, n_samples)
    noise_of = {
        side: {c: rng.standard_normal((n_samples, model.components[c].latent_dim)).astype(np.float32) for c in closure}
        for side in ("a", "b")
    }
    likelihood = module.likelihoods[modality]
    # every batch combination present in the data, each decoded in turn (the expectation over B)
    codes = np.unique(data.modality(modality).batch_one_hot(model.batch_categories[modality]), axis=0)
    codes = tf.constant(codes if codes.shape[1] else np.zeros((1, 0), np.float32))

    @tf.function(reduce_retracing=True)
    def batch_averaged(inputs: dict, noise: dict) -> tf.Tensor:
        outputs = model(inputs, training=False, sample=True, components=[component], decode=False, noise=noise)
        z_hat = outputs[component]["z_hat"]
        n = tf.shape(z_hat)[0]

        def decode(code: tf.Tensor) -> tf.Tensor:
            batch = tf.tile(code[None, :], tf.stack([n, 1]))
            return likelihood.normalized_mean(module.decoders[modality](z_hat, batch), scale)

        return tf.reduce_mean(tf.map_fn(decode, codes, fn_output_signature=tf.float32), axis=0)

    n_features = data.mod[modality].n_vars
    greater = np.zeros(n_features)
    less = np.zeros(n_features)
    lfc = np.zeros(n_features)
    total_a = np.zeros(n_features)
    total_b = np.zeros(n_features)
    datasets = {
        side: model.make_dataset(data, batch_size=batch_size, shuffle=False, indices=cells)
        for side, cells in (("a", pairs_a), ("b", pairs_b))
    }
    for start, (inputs_a, inputs_b) in zip(range(0, n_samples, batch_size), zip(datasets["a"], datasets["b"])):
        window = slice(start, start + batch_size)
        rho = {
            side: batch_averaged(inputs, {c: tf.constant(v[window]) for c, v in noise_of[side].items()}).numpy()
            for side, inputs in (("a", inputs_a), ("b", inputs_b))
        }
        change = np.log2(rho["a"] + eps) - np.log2(rho["b"] + eps)
        greater += (change > delta).sum(axis=0)
        less += (change < -delta).sum(axis=0)
        lfc += change.sum(axis=0)
        total_a += rho["a"].sum(axis=0)
        total_b += rho["b"].sum(axis=0)
    p_a, p_b = greater / n_samples, less / n_samples
    table = pd.DataFrame(
        {
            "prob_a_gt_b": p_a,
            "prob_b_gt_a": p_b,
            "bayes_factor_a_gt_b": np.log(p_a + eps) - np.log(1 - p_a + eps),
            "bayes_factor_b_gt_a": np.log(p_b + eps) - np.log(1 - p_b + eps),
            "lfc_mean": lfc / n_samples,
            "mean_a": total_a / n_samples,
            "mean_b": total_b / n_samples,
            "expressed_a": _expressed(data, modality, a),
            "expressed_b": _expressed(data, modality, b),
        },
        index=pd.Index(data.mod[modality].var_names, name="feature"),
    )
    table["significant"] = np.maximum(table["bayes_factor_a_gt_b"], table["bayes_factor_b_gt_a"]) >= threshold
    table.attrs.update({"group_a": name_a, "group_b": name_b, "n_a": len(a), "n_b": len(b),
                        "modality": modality, "n_samples": n_samples, "delta": float(delta)})
    # Bayes factors saturate at |log eps| when every pair agrees; fold changes break those ties
    return table.sort_values(["bayes_factor_a_gt_b", "lfc_mean"], ascending=False)


def one_vs_rest(model: Any, data: Any, modality: str, groupby: str, groups: Sequence[str] | None = None,
                **kwargs: Any) -> pd.DataFrame:
    """:func:`differential_analysis` of each group of ``groupby`` against all other cells.

    Returns one long table with a ``group`` column (features ranked within each group).
    """
    column = data.obs_column(groupby).astype(str)
    groups = list(groups) if groups is not None else sorted(column.unique())
    tables = []
    for group in groups:
        table = differential_analysis(model, data, modality, group_a=group, groupby=groupby, **kwargs)
        tables.append(table.reset_index().assign(group=group))
    return pd.concat(tables, ignore_index=True)


def ranking_score(table: pd.DataFrame) -> pd.Series:
    """Signed Bayes factor per feature (up in A positive), ties broken by fold change, for ranked GSEA."""
    signed = np.where(
        table["bayes_factor_a_gt_b"] >= table["bayes_factor_b_gt_a"],
        table["bayes_factor_a_gt_b"],
        -table["bayes_factor_b_gt_a"],
    )
    # fold changes in [-1e-3, 1e-3] order features whose Bayes factors tie at saturation
    tie_break = 1e-3 * np.tanh(table["lfc_mean"].to_numpy())
    return pd.Series(signed + tie_break, index=table.index, name="score")
