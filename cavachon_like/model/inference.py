"""Latents of new cells for components without an encoder (multiDGD's inference, paper 001 Methods).

A component with ``posterior: representation`` has a learned latent for each cell it was
trained on and no encoder, so the latent of any other cell is found the way multiDGD finds
it: with the decoders and the prior frozen, maximise ``log p(x | z) + log p(z)`` over ``z``
alone. Each cell starts at the prior's mode that explains it best (the mixture component
mean with the lowest loss: paper 001's "best mode"), then takes ``n_steps`` Adam steps with
the representation table's betas. Only the modalities given enter ``log p(x | z)``,
which is how a model trained on RNA + ATAC places cells that have only one of them
(missing-modality prediction: decode the other from the inferred ``z``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from ..data.backed import in_memory
from ..data.groups import cell_positions
from ..nn import as_dense, library_size
from ..nn.covariates import MIN_VARIANCE
from ..nn.representation import adam_step
from .decoding import expression
from .specs import check_feature_counts

#: Adam steps per cell after the best-mode start (paper 001 uses 10). Placing SNARE-seq's
#: libraries 09K + 09L (1,624 cells) in a configs/multidgd.yaml model: 0 / 10 / 25 / 50 steps took
#: 26 / 43 / 70 / 113 s and gave 15-NN label transfer 0.523 / 0.739 / 0.746 / 0.743; on the
#: simulator of tests/test_representation.py new cells matched their type at 0.91 / 0.90 / 0.90 for
#: 10 / 25 / 50. Each step decodes every feature, so steps are most of the cost.
DEFAULT_STEPS = 25
#: Their learning rate: larger than training's per-row 1e-2, since here each cell takes all its
#: steps at once against a fixed model and must cross the latent space (unit scale) within them;
#: at 1e-2, 25 steps move a cell at most 0.25 from its starting mode.
DEFAULT_INFERENCE_RATE = 0.1
#: Rounds of fitting a new covariate component and inferring its cells (``new_covariates``).
COVARIATE_ROUNDS = 3


def check_sources(model: Any, data: Any, component: str, modalities: Sequence[str] | None) -> list[str]:
    """The modalities a component's latents are inferred from (default: those of the component ``data`` has)."""
    module = model.components[component]
    own = module.modalities
    mods = [m for m in own if m in data.mod] if modalities is None else list(modalities)
    unknown = [m for m in mods if m not in own]
    if unknown:
        raise ValueError(f"component {component!r} decodes {own}; it cannot be inferred from {unknown}.")
    if not mods:
        raise ValueError(f"the data have none of the modalities of component {component!r} ({own}), so its latents "
                         "have nothing to be inferred from.")
    missing = [m for m in mods if m not in data.mod]
    if missing:
        raise ValueError(f"the data lack {missing}, which the latents of {component!r} were asked to be inferred "
                         f"from; the data have {list(data.mod)}.")
    check_feature_counts(model.modality_specs, data, mods)
    return mods


def infer_latents(model: Any, data: Any, component: str, modalities: Sequence[str] | None = None,
                  n_steps: int = DEFAULT_STEPS, learning_rate: float = DEFAULT_INFERENCE_RATE,
                  batch_size: int = 256, new_covariates: bool = False, rounds: int = COVARIATE_ROUNDS) -> np.ndarray:
    """Latents (cells x table width, float32: the basal latent, then any covariate representations)
    of every cell of ``data`` for the learned-representation ``component``, fitted against the
    frozen model from ``modalities`` (default: all of the component's modalities that ``data``
    has). Nothing of the model changes.

    With a covariate model, a cell's covariate representation is scored under its category's
    component; a category the model has not seen is scored under the mixture of the known ones
    (multiDGD's naive integration) or, with ``new_covariates``, under a new component per unseen
    category, fitted to those cells (paper 001, Fig. 5: everything else frozen): ``rounds``
    alternations of inferring the cells and setting the new component's mean and variance to
    their representations' (the maximum of the same objective in the component's parameters).
    """
    module = model.components[component]
    if module.posterior != "representation":
        raise ValueError(f"component {component!r} has an encoder (posterior: {module.posterior}); its latents come "
                         "from get_latent_representation.")
    if int(n_steps) < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}.")
    mods = check_sources(model, data, component, modalities)
    ancestors = [c for c in model.graph.order if c in model.graph.closure([component]) and c != component]
    sources = [m for c in ancestors for m in model.graph.modalities(c)]
    absent = [m for m in sources if m not in data.mod]
    if absent:
        raise ValueError(f"the latents of {component!r} depend on its ancestors {ancestors}, whose modalities "
                         f"{absent} the data lack.")
    loaded = list(dict.fromkeys(sources + mods))
    categories = {m: model.batch_categories[m] for m in loaded}
    per_cell, unseen, codes = None, {}, {}
    if module.covariates is not None:
        codes, unseen = covariate_codes(model, data, component, new_covariates=False)
        per_cell = {"covariate_codes": codes}
        for m in mods:  # the decoders read covariate latents, so unseen categories need no one-hot column
            if m not in sources:
                categories[m] = {col: list(cats) + unseen.get(col, []) for col, cats in categories[m].items()}

    def run(per_cell: dict | None, extra: dict | None) -> np.ndarray:
        dataset = data.to_dataset(batch_size=batch_size, shuffle=False, modalities=loaded,
                                  batch_categories=categories, per_cell=per_cell)
        infer = _inference_step(model, component, tuple(mods), tuple(ancestors), int(n_steps), float(learning_rate),
                                dataset.element_spec)
        return np.concatenate([infer(inputs, _extra_tensors(module, extra)).numpy() for inputs in dataset])

    result = run(per_cell, None)  # unseen categories under the known ones' mixture: naive integration
    if new_covariates and unseen:
        codes, _ = covariate_codes(model, data, component, new_covariates=True)
        for _ in range(int(rounds)):  # new components at their cells' representations, then the cells again
            result = run({"covariate_codes": codes}, _fitted_components(module, result, codes, unseen))
    return result.astype(np.float32)


def covariate_codes(model: Any, data: Any, component: str, new_covariates: bool
                    ) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Each cell's category code per batch column of a component's covariate model (the
    model's index; for a category it has not seen, -1, or with ``new_covariates`` ``C + j`` for
    the j-th unseen category) and the unseen categories per column."""
    module = model.components[component]
    codes, unseen = {}, {}
    for col in module.covariates.columns:
        m = next((m for m in module.modalities if m in data.mod and col in model.batch_categories[m]), None)
        if m is None:
            raise ValueError(f"component {component!r} models batch column {col!r}, which none of its modalities in "
                             f"the data ({[m for m in module.modalities if m in data.mod]}) has.")
        if col not in data.mod[m].obs:
            raise ValueError(f"modality {m!r} of the data lacks the batch column {col!r} that the covariate model of "
                             f"{component!r} reads; add it to .obs (any value: unseen ones are placed as new batches).")
        known = list(model.batch_categories[m][col])
        values = data.mod[m].obs[col].astype(str).to_numpy()
        codes[col] = pd.Categorical(values, categories=known).codes.astype(np.int32)
        new = sorted(set(values[codes[col] < 0]))
        if new:
            unseen[col] = new
            if new_covariates:
                codes[col] = np.where(codes[col] < 0, len(known) + pd.Categorical(values, categories=new).codes,
                                      codes[col]).astype(np.int32)
    return codes, unseen


def _extra_tensors(module: Any, extra: dict | None) -> dict[str, tuple[tf.Tensor, tf.Tensor]]:
    """The new covariate components as the inference step's input (an empty (0, dim) pair per column without)."""
    if module.covariates is None:
        return {}
    empty = np.zeros((0, module.covariates.dim), np.float32)
    return {col: tuple(tf.constant(a, tf.float32) for a in (extra or {}).get(col, (empty, empty)))
            for col in module.covariates.columns}


def _fitted_components(module: Any, latents: np.ndarray, codes: dict[str, np.ndarray],
                       unseen: dict[str, list[str]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Mean and variance (floored) of each new category's cells' covariate representations."""
    covariates, fitted = module.covariates, {}
    for col, block in covariates.slices(latents[:, module.latent_dim:]).items():
        if col not in unseen:
            continue
        n_known = covariates.columns[col]
        means = np.stack([block[codes[col] == n_known + j].mean(0) for j in range(len(unseen[col]))])
        variances = np.stack([block[codes[col] == n_known + j].var(0) for j in range(len(unseen[col]))])
        fitted[col] = (means.astype(np.float32), np.maximum(variances, MIN_VARIANCE).astype(np.float32))
    return fitted


def _inference_step(model: Any, component: str, mods: tuple[str, ...], ancestors: tuple[str, ...], n_steps: int,
                    learning_rate: float, spec: Any) -> Any:
    """The traced inference of one batch, built once per model and settings.

    A ``tf.function`` made afresh on every call would be traced again on every
    ``predict_new`` (seconds each, and TensorFlow's retracing warnings in a notebook);
    kept in the model's instance dictionary (plain Python state, outside Keras' tracking and
    its saved files), it is traced once: ``spec`` (the batches' element spec, any batch size)
    is its input signature and part of the key, so data of another layout gets its own. The
    prior's modes and every weight are read inside, so later training is seen.
    """
    cache = model.__dict__.setdefault("_inference_steps", {})
    key = (component, mods, ancestors, n_steps, learning_rate, tuple(tf.nest.flatten(spec)))
    if key in cache:
        return cache[key]
    module = model.components[component]
    table, covariates, d = module.encoder, module.covariates, module.latent_dim

    def cell_loss(full: tf.Tensor, inputs: dict, parents: list[tf.Tensor], extra: dict) -> tf.Tensor:
        z, own = full[:, :d], None
        z_hat = module.hierarchical_encoder(tf.cast(z, module.compute_dtype), parents)
        loss = -module.prior.log_prob(z)
        if covariates is not None:
            own = full[:, d:]
            loss -= covariates.log_prob(own, inputs["covariate_codes"], extra)
        for m in mods:
            likelihood = module.likelihoods[m]
            x = inputs["x"][m]
            params = likelihood.constrain(module.decode(m, z_hat, inputs["batch"][m], own), library_size(x))
            log_prob = likelihood.log_prob(x if likelihood.accepts_sparse else as_dense(x), params)
            if "measured" in inputs:  # mosaic data: an unmeasured modality's empty row is no evidence
                log_prob = log_prob * inputs["measured"][m]
            loss -= log_prob
        return loss

    def start(inputs: dict, parents: list[tf.Tensor], extra: dict, n: tf.Tensor) -> tf.Tensor:
        """The best prior mode per cell: the loss at every mode, the lowest wins (then, with a
        covariate model, the best known category for cells of an unseen one, column by column)."""
        modes = tf.cast(module.prior.modes(), tf.float32)
        own = tf.zeros([n, 0])
        if covariates is not None:
            parts = []
            for col, code in inputs["covariate_codes"].items():
                means = tf.concat([tf.convert_to_tensor(covariates.means[col]), extra[col][0]], axis=0)
                centre = tf.reduce_mean(tf.convert_to_tensor(covariates.means[col]), axis=0)
                parts.append(tf.where((code >= 0)[:, None], tf.gather(means, tf.maximum(code, 0)), centre))
            own = tf.concat(parts, axis=-1)
        losses = tf.map_fn(lambda mode: cell_loss(tf.concat([tf.tile(mode[None, :], [n, 1]), own], -1), inputs,
                                                  parents, extra), modes)
        z = tf.gather(modes, tf.argmin(losses, axis=0))
        for i, (col, code) in enumerate(inputs["covariate_codes"].items() if covariates is not None else []):
            columns = slice(i * covariates.dim, (i + 1) * covariates.dim)
            known = tf.convert_to_tensor(covariates.means[col])

            def at(mean: tf.Tensor) -> tf.Tensor:
                trial = tf.concat([own[:, :columns.start], tf.tile(mean[None, :], [n, 1]), own[:, columns.stop:]], -1)
                return cell_loss(tf.concat([z, trial], -1), inputs, parents, extra)

            best = tf.gather(known, tf.argmin(tf.map_fn(at, known), axis=0))
            chosen = tf.where((code < 0)[:, None], best, own[:, columns])
            own = tf.concat([own[:, :columns.start], chosen, own[:, columns.stop:]], -1)
        return tf.concat([z, own], -1)

    dim = covariates.dim if covariates is not None else 0
    extra_spec = {col: (tf.TensorSpec([None, dim], tf.float32),) * 2 for col in (covariates.columns if dim else [])}

    @tf.function(input_signature=[spec, extra_spec])
    def infer(inputs: dict, extra: dict) -> tf.Tensor:
        parents: list[tf.Tensor] = []
        if ancestors:
            outputs = model(inputs, training=False, sample=False, components=list(ancestors), decode=False)
            parents = [outputs[p][module.conditioned_on] for p in module.parents]
        n = tf.shape(inputs["batch"][mods[0]])[0]
        z = start(inputs, parents, extra, n)
        first, second = tf.zeros_like(z), tf.zeros_like(z)
        for step in tf.range(1, n_steps + 1):
            with tf.GradientTape() as tape:
                tape.watch(z)
                loss = tf.reduce_sum(cell_loss(z, inputs, parents, extra))
            steps = tf.fill([n], tf.cast(step, tf.float32))
            z, first, second = adam_step(z, tape.gradient(loss, z), first, second, steps, learning_rate,
                                         table.beta_1, table.beta_2, table.epsilon)
        return z

    cache[key] = infer
    return infer


def predict_from_representation(model: Any, data: Any, target: str, library_size: float = 1e4,
                                n_samples: int = 25, transform_batch: Any = None, seed: int = 0,
                                batch_size: int = 1024, log1p: bool = False, depth: Any = None) -> np.ndarray:
    """``predict_modality`` for a component without an encoder: infer each cell's latent from the
    component's *other* modalities (:func:`infer_latents`), decode ``target`` from it.

    The latent is a point estimate, so ``n_samples`` and ``seed`` have nothing to draw and are
    ignored; ``transform_batch``, ``log1p`` and ``depth`` as in ``predict_modality``.
    """
    from .prediction import target_batches, target_depth

    component = model.graph.component_of(target)
    module = model.components[component]
    sources = [m for m in module.modalities if m != target and m in data.mod]
    if not sources:
        raise ValueError(f"modality {target!r} is decoded from component {component!r}, whose other modalities "
                         f"({[m for m in module.modalities if m != target]}) the data lack: nothing to infer its "
                         "latent from.")
    latents = infer_latents(model, data, component, modalities=sources)
    codes = target_batches(model, data, target, transform_batch)
    ancestors = [c for c in model.graph.order if c in model.graph.closure([component]) and c != component]
    loaded = list(dict.fromkeys([m for c in ancestors for m in model.graph.modalities(c)] + sources
                                + ([target] if codes is None else [])))
    dataset = data.to_dataset(batch_size=batch_size, shuffle=False, modalities=loaded,
                              batch_categories={m: model.batch_categories[m] for m in loaded},
                              per_cell={"latent": {component: latents}})
    likelihood, d = module.likelihoods[target], module.latent_dim
    depths = target_depth(model, target, depth, data) if log1p else None
    parts, done = [], 0
    for inputs in dataset:
        parents: list[tf.Tensor] = []
        if ancestors:
            outputs = model(inputs, training=False, sample=False, components=ancestors, decode=False)
            parents = [outputs[p][module.conditioned_on] for p in module.parents]
        full = tf.cast(inputs["latent"][component], module.compute_dtype)
        z_hat = module.hierarchical_encoder(full[:, :d], parents)
        n = int(tf.shape(z_hat)[0])
        own = full[:, d:] if codes is None and module.covariates is not None else None  # its own covariate latents
        rows = ([inputs["batch"][target]] if codes is None
                else [tf.tile(tf.constant(c[None, :]), [n, 1]) for c in codes])
        statistic = expression(likelihood, library_size, log1p, None if depths is None else depths[done:done + n])
        mean = tf.add_n([statistic(module.decode(target, z_hat, row, own)) for row in rows]) / len(rows)
        parts.append(tf.cast(mean, tf.float32).numpy())
        done += n
    return np.concatenate(parts)


def pca_start(data: Any, modalities: Sequence[str], dim: int, scale: float, seed: int = 0) -> np.ndarray:
    """Starting representations (cells x ``dim``) from the data: per modality, a truncated SVD of
    ``log1p(1e4 * x / library)`` (sparse, memory O(non-zeros)), each modality's scores scaled to
    unit variance so that modalities weigh alike, joined and reduced to ``dim`` by PCA, then
    scaled to standard deviation ``scale`` per dimension.

    Learned representations move one optimiser step per epoch, so from the origin they need
    hundreds of epochs to unfold (multiDGD trains up to 1,000); this start gives them the data's
    main axes at once (paper 001 names a PCA start as the alternative to the origin).
    """
    import scipy.sparse as sp
    from sklearn.decomposition import PCA, TruncatedSVD

    blocks = []
    for m in modalities:
        x = sp.csr_matrix(in_memory(data.mod[m].X), dtype=np.float32)  # an SVD of all cells: on-disk data are read
        totals = np.asarray(x.sum(axis=1)).ravel()
        x = sp.diags((1e4 / np.maximum(totals, 1.0)).astype(np.float32)) @ x
        x.data = np.log1p(x.data)
        k = int(min(dim, x.shape[1] - 1, x.shape[0] - 1))
        scores = TruncatedSVD(n_components=max(k, 1), random_state=seed).fit_transform(x)
        blocks.append(scores / max(float(scores.std()), 1e-12))
    joined = np.concatenate(blocks, axis=1)
    if joined.shape[1] > dim:
        joined = PCA(n_components=dim, random_state=seed).fit_transform(joined)
    start = np.zeros((data.n_obs, dim), np.float32)
    start[:, :joined.shape[1]] = (joined - joined.mean(0)) / np.maximum(joined.std(0), 1e-12) * scale
    return start


def per_cell_inputs(model: Any, data: Any, indices: Any, training: bool) -> dict[str, Any] | None:
    """What ``model.make_dataset`` adds to the batches for learned-representation components: each
    cell's ``index`` (its row; with ``training``, where every cell must have one, and a PCA start
    for a table that has not trained yet) or its ``latent`` (:func:`stored_or_inferred`)."""
    tables = {c: m.encoder for c, m in model.components.items() if m.posterior == "representation"}
    if not tables:
        return None
    cells = np.arange(data.n_obs) if indices is None else cell_positions(indices, data.obs_names, "indices")
    if training:
        index = {}
        for name, table in tables.items():
            if not table.has_cells:
                table.assign_cells(data.obs_names)
            untrained = not np.asarray(table.steps).any() and not np.asarray(table.embeddings).any()
            if table.start == "pca" and untrained:  # start from the data (once: fit makes two datasets)
                start = _table_start(model, data, name)
                rows = table.rows_of(data.obs_names)
                known = rows >= 0
                values = np.asarray(table.embeddings).copy()
                values[rows[known]] = start[known]
                table.embeddings.assign(values)
            index[name] = table.rows_of(data.obs_names)
            unknown = np.flatnonzero(index[name][cells] < 0)
            if unknown.size:
                raise ValueError(f"component {name!r} learned latents for {table.n_cells} cells; {unknown.size} "
                                 f"of the cells to train on have none (e.g. "
                                 f"{list(data.obs_names[cells[unknown[:3]]])}). Train on the cells the model was "
                                 "built from (validation_split holds some out), and place others with predict_new.")
            index[name] = np.maximum(index[name], 0)
        return {"index": index}
    return {"latent": {name: stored_or_inferred(model, data, name, cells) for name in tables}}


def _table_start(model: Any, data: Any, component: str) -> np.ndarray:
    """Where the rows of a component's table start: :func:`pca_start` for the basal latent, and
    each cell's covariate representations at its categories' component means."""
    module = model.components[component]
    table = module.encoder
    start = np.zeros((data.n_obs, table.latent_dim), np.float32)
    start[:, :module.latent_dim] = pca_start(data, model.graph.modalities(component), module.latent_dim,
                                             table.start_scale, seed=model.seed or 0)
    if module.covariates is not None:  # codes in the covariate model's column order, all known in training data
        codes, _ = covariate_codes(model, data, component, new_covariates=False)
        start[:, module.latent_dim:] = np.concatenate(
            [np.asarray(module.covariates.means[col])[np.maximum(code, 0)] for col, code in codes.items()], axis=1)
    return start


def stored_or_inferred(model: Any, data: Any, component: str, cells: np.ndarray) -> np.ndarray:
    """Latents (n_obs x d) of a learned-representation component: learned rows where cells have one,
    inferred from all the component's modalities for the cells of ``cells`` that have none."""
    table = model.components[component].encoder
    rows = table.rows_of(data.obs_names)
    latents = np.zeros((data.n_obs, table.latent_dim), np.float32)
    known = rows >= 0
    latents[known] = np.asarray(table.embeddings)[rows[known]]
    new = cells[~known[cells]]
    if new.size:
        latents[new] = infer_latents(model, data[new], component)
    return latents
