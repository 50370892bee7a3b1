"""Cross-modal prediction: a modality from the others, through CAVACHON's DAG or a component's experts.

A child component's latent is ``z_hat = f_b([parents' z_hat; f_r(z)])`` (paper Eq. 2), and its
prior ``p(z)`` does not depend on the parents. Without the child's own data, ``z`` therefore
comes from that prior, and the prediction is the decoded mean averaged over prior draws of
``z`` with the parents encoded from their data:
``E[x_target | x_ancestors] = E_{z ~ p(z)}[mean(x_target | f_b([z_hat_parents; f_r(z)]))]``.

A joint component with ``posterior: poe`` or ``moe`` defines q(z | any subset of its
modalities), so there ``z`` is drawn from the product (poe) or the mixture (moe) of the
experts of the modalities the cells have (and the parents, if any, enter as above).
"""
from __future__ import annotations

import itertools
from functools import partial
from typing import Any

import numpy as np
import tensorflow as tf

from ..data.depth import predicted_library_size
from ..data.groups import name_examples
from ..errors import InputError
from ..nn import library_size
from .decoding import averaged_mean, batch_codes, expression
from .specs import check_feature_counts


def _known_batches(model: Any, target: str) -> np.ndarray:
    """Every combination of the target's batch categories the model knows, as one-hot rows."""
    columns = list(model.batch_categories[target].values())
    if not columns:
        return np.zeros((1, 0), np.float32)
    rows = []
    for combination in itertools.product(*(range(len(c)) for c in columns)):
        rows.append(np.concatenate([np.eye(len(c), dtype=np.float32)[i] for c, i in zip(columns, combination)]))
    return np.stack(rows)


def target_batches(model: Any, data: Any, target: str, transform_batch: Any) -> np.ndarray | None:
    """One-hot batch rows for the target's decoder; ``None``: each cell's own (needs the target)."""
    present = target in data.mod
    if transform_batch is None and present:
        return None
    if transform_batch is None and not model.batch_categories[target]:
        return np.zeros((1, 0), np.float32)
    if transform_batch is None:
        raise ValueError(f"the cells have no modality {target!r}, so its batch covariates "
                         f"{list(model.batch_categories[target])} are unknown: pass transform_batch='all' "
                         "(average over every batch the model knows) or {column: category}.")
    if transform_batch == "all" and not present:
        return _known_batches(model, target)
    return batch_codes(model, data, target, transform_batch)


def _experts_posterior(module: Any, modalities: list[str], inputs: dict) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
    """The experts of the given modalities: means and variances, which ``module.encoder.sample`` combines
    (a product with N(0, I) for ``poe``, a mixture for ``moe``)."""
    means, variances = [], []
    for m in modalities:
        x = inputs["x"][m]
        expert = module.encoder.experts[module.modalities.index(m)]
        mean, var = expert([module.preprocessors[m](x, library_size(x))], inputs["batch"][m])
        means.append(tf.cast(mean, tf.float32))
        variances.append(tf.cast(var, tf.float32))
    return means, variances


def _check_sources(model: Any, data: Any, ancestors: list[str], experts: list[str], target: str) -> None:
    """Raise an :class:`~cavachon_like.errors.InputError` naming the cells of mosaic data that
    lack what predicting ``target`` needs: every ancestor component (each of its modalities for
    one encoder, one of them for experts) and one of the ``experts``."""
    needs = [(c, model.graph.modalities(c), model.components[c].has_experts) for c in ancestors]
    if experts:
        needs.append((model.graph.component_of(target), experts, True))
    for component, modalities, any_of in needs:
        flags = np.array([data.mod[m].measured for m in modalities])
        lacking = ~(flags.any(axis=0) if any_of else flags.all(axis=0))
        if lacking.any():
            raise InputError(
                f"predicting {target!r} goes through component {component!r}, which needs "
                f"{'one of' if any_of else 'all of'} {modalities}; {int(lacking.sum())} cells lack "
                f"{'them' if any_of else 'some'} (e.g. {name_examples(data.obs_names[lacking])}). Predict for the "
                f"other cells, e.g. data[mask] with mask = ~ the cells named."
            )


def target_depth(model: Any, target: str, depth: Any, data: Any) -> np.ndarray:
    """The library size of ``target`` at which each cell of ``data`` has its counts drawn for
    ``log1p`` predictions.

    ``depth`` is a number or one per cell; ``"median"``, the median the model recorded for
    ``target`` on its training cells; ``None`` (the default), each cell's size predicted from
    its other modalities' library sizes by the log-linear fits the model recorded
    (:func:`~cavachon_like.data.depth.library_size_fits`), and the median for cells without one.
    """
    spec = model.modality_specs[target]
    if depth is None or (isinstance(depth, str) and depth == "median"):
        median = spec.get("median_library_size")
        if median is None:
            raise ValueError(f"the model records no typical library size of {target!r} (it was built before models "
                             "recorded one, or from specs without data): pass depth=, e.g. the median total count "
                             f"of {target!r} in the training data.")
        values = np.full(data.n_obs, float(median))
        if depth is None and spec.get("library_size_from"):
            predicted = predicted_library_size(data, spec["library_size_from"])
            values = np.where(np.isfinite(predicted), predicted, values)
        return values
    if isinstance(depth, str):
        raise ValueError(f"depth must be a number, one number per cell, 'median' or None, got {depth!r}.")
    values = np.asarray(depth, np.float64)
    if values.ndim == 0:
        values = np.full(data.n_obs, float(values))
    if values.shape != (data.n_obs,) or not np.all(np.isfinite(values) & (values > 0)):
        raise ValueError(f"depth must be a positive number or one positive number per cell ({data.n_obs}), got an "
                         f"array of shape {values.shape} with minimum {np.nanmin(values) if values.size else 'n/a'}.")
    return values


def predict_modality(model: Any, data: Any, target: str, library_size: float = 1e4, n_samples: int = 25,
                     transform_batch: Any = None, seed: int = 0, batch_size: int = 1024, log1p: bool = False,
                     depth: Any = None) -> np.ndarray:
    """See :meth:`~cavachon_like.model.base.MultimodalModel.predict_modality`."""
    if target not in model.modality_names:
        raise KeyError(f"the model has no modality {target!r}; it has {model.modality_names}.")
    if int(n_samples) < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples}.")
    component = model.graph.component_of(target)
    module = model.components[component]
    # With experts (poe, moe), the target's latent comes from the experts of the
    # component's other modalities that the cells have; otherwise from its prior.
    experts = ([m for m in model.graph.modalities(component) if m != target and m in data.mod]
               if module.has_experts else [])
    if not model.graph.parents(component) and not experts:
        raise ValueError(f"modality {target!r} is decoded from component {component!r}, which has no parents"
                         + (" and no other modality in the data" if module.has_experts else
                            " and one encoder over all its modalities") +
                         ": no other modality predicts it. Train a model whose DAG makes it a child of the "
                         "modalities you have, or a joint component with posterior: poe or moe.")
    ancestors = [c for c in model.graph.order if c in model.graph.closure([component]) and c != component]
    sources = [m for c in ancestors for m in model.graph.modalities(c)] + experts
    missing = [m for m in sources if m not in data.mod]
    if missing:
        raise ValueError(f"predicting {target!r} needs the modalities of its ancestors {ancestors}: the data lack "
                         f"{missing}.")
    check_feature_counts(model.modality_specs, data, sources)
    _check_sources(model, data, ancestors, experts, target)
    codes = target_batches(model, data, target, transform_batch)
    decoder, likelihood = partial(module.decode, target), module.likelihoods[target]
    depths = target_depth(model, target, depth, data) if log1p else None
    modalities = sources + ([target] if codes is None else [])
    dataset = data.to_dataset(batch_size=batch_size, shuffle=False, modalities=modalities,
                              batch_categories={m: model.batch_categories[m] for m in modalities})
    rng = np.random.default_rng(seed)
    parts, done = [], 0
    for inputs in dataset:
        outputs: dict[str, dict[str, Any]] = {}
        for name in ancestors:
            layer = model.components[name]
            parents = [outputs[p][layer.conditioned_on] for p in layer.parents]
            outputs[name] = layer(inputs["x"], inputs["batch"], parents, sample=False, decode=False)
        parents = [outputs[p][module.conditioned_on] for p in module.parents]
        n = int(tf.shape(next(iter(inputs["batch"].values())))[0])
        if codes is None:
            rows = inputs["batch"][target][None]  # (1, n, B): each cell's own batch
        else:
            rows = tf.broadcast_to(tf.constant(codes, tf.float32)[:, None, :], [len(codes), n, codes.shape[1]])
        if experts:
            means, variances = _experts_posterior(module, experts, inputs)
            present = [inputs["measured"][m] for m in experts] if "measured" in inputs else None
        # The draws, in the order (and from the generator) of one draw per decoder pass; then the
        # hierarchical encoder and the decoder see every draw (and batch row) stacked along the batch axis.
        draws = [module.encoder.sample(means, variances, rng, present) if experts
                 else tf.constant(module.prior.sample(n, rng)) for _ in range(int(n_samples))]
        z = tf.concat(draws, axis=0)
        z_hat = module.hierarchical_encoder(z, [tf.tile(p, [int(n_samples), 1]) for p in parents])
        z_hat = tf.reshape(z_hat, [int(n_samples), n, -1])
        statistic = expression(likelihood, library_size, log1p, None if depths is None else depths[done:done + n])
        parts.append(averaged_mean(decoder, statistic, z_hat, rows, batch_size))
        done += n
    return np.concatenate(parts)
