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
import tensorflow as tf

from ..data.backed import in_memory
from ..data.groups import cell_positions
from ..nn import as_dense, library_size
from ..nn.representation import adam_step
from .specs import check_feature_counts

#: Adam steps per cell after the best-mode start (paper 001 uses 10; more steps cost little
#: and let cells far from every mode settle).
DEFAULT_STEPS = 50
#: Their learning rate: larger than training's per-row 1e-2, since here each cell takes all its
#: steps at once against a fixed model and must cross the latent space (unit scale) within them;
#: at 1e-2, 50 steps move a cell at most 0.5 from its starting mode.
DEFAULT_INFERENCE_RATE = 0.1


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
                  batch_size: int = 256) -> np.ndarray:
    """Latents (cells x d, float32) of every cell of ``data`` for the learned-representation
    ``component``, fitted against the frozen model from ``modalities`` (default: all of the
    component's modalities that ``data`` has). Nothing of the model changes."""
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
    dataset = data.to_dataset(batch_size=batch_size, shuffle=False, modalities=loaded,
                              batch_categories={m: model.batch_categories[m] for m in loaded})
    infer = _inference_step(model, component, tuple(mods), tuple(ancestors), int(n_steps), float(learning_rate),
                            dataset.element_spec)
    return np.concatenate([infer(inputs).numpy() for inputs in dataset]).astype(np.float32)


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
    table = module.encoder

    def cell_loss(z: tf.Tensor, inputs: dict, parents: list[tf.Tensor]) -> tf.Tensor:
        z_hat = module.hierarchical_encoder(tf.cast(z, module.compute_dtype), parents)
        loss = -module.prior.log_prob(z)
        for m in mods:
            likelihood = module.likelihoods[m]
            x = inputs["x"][m]
            raw = module.decoders[m](z_hat, inputs["batch"][m])
            params = likelihood.constrain(raw, library_size(x))
            log_prob = likelihood.log_prob(x if likelihood.accepts_sparse else as_dense(x), params)
            if "measured" in inputs:  # mosaic data: an unmeasured modality's empty row is no evidence
                log_prob = log_prob * inputs["measured"][m]
            loss -= log_prob
        return loss

    @tf.function(input_signature=[spec])
    def infer(inputs: dict) -> tf.Tensor:
        parents: list[tf.Tensor] = []
        if ancestors:
            outputs = model(inputs, training=False, sample=False, components=list(ancestors), decode=False)
            parents = [outputs[p][module.conditioned_on] for p in module.parents]
        n = tf.shape(inputs["batch"][mods[0]])[0]
        # The best mode per cell: the loss at every mode, the lowest wins.
        modes = tf.cast(module.prior.modes(), tf.float32)
        losses = tf.map_fn(lambda mode: cell_loss(tf.tile(mode[None, :], [n, 1]), inputs, parents), modes)
        z = tf.gather(modes, tf.argmin(losses, axis=0))
        first, second = tf.zeros_like(z), tf.zeros_like(z)
        for step in tf.range(1, n_steps + 1):
            with tf.GradientTape() as tape:
                tape.watch(z)
                loss = tf.reduce_sum(cell_loss(z, inputs, parents))
            steps = tf.fill([n], tf.cast(step, tf.float32))
            z, first, second = adam_step(z, tape.gradient(loss, z), first, second, steps, learning_rate,
                                         table.beta_1, table.beta_2, table.epsilon)
        return z

    cache[key] = infer
    return infer


def predict_from_representation(model: Any, data: Any, target: str, library_size: float = 1e4,
                                n_samples: int = 25, transform_batch: Any = None, seed: int = 0,
                                batch_size: int = 1024) -> np.ndarray:
    """``predict_modality`` for a component without an encoder: infer each cell's latent from the
    component's *other* modalities (:func:`infer_latents`), decode ``target`` from it.

    The latent is a point estimate, so ``n_samples`` and ``seed`` have nothing to draw and are
    ignored; ``transform_batch`` as in ``predict_modality``.
    """
    from .prediction import target_batches

    component = model.graph.component_of(target)
    module = model.components[component]
    sources = [m for m in module.modalities if m != target and m in data.mod]
    if not sources:
        raise ValueError(f"modality {target!r} is decoded from component {component!r}, whose other modalities "
                         f"({[m for m in module.modalities if m != target]}) the data lack: nothing to infer its "
                         "latent from.")
    z = infer_latents(model, data, component, modalities=sources)
    codes = target_batches(model, data, target, transform_batch)
    ancestors = [c for c in model.graph.order if c in model.graph.closure([component]) and c != component]
    loaded = list(dict.fromkeys([m for c in ancestors for m in model.graph.modalities(c)] + sources
                                + ([target] if codes is None else [])))
    dataset = data.to_dataset(batch_size=batch_size, shuffle=False, modalities=loaded,
                              batch_categories={m: model.batch_categories[m] for m in loaded},
                              per_cell={"latent": {component: z}})
    decoder, likelihood = module.decoders[target], module.likelihoods[target]
    parts = []
    for inputs in dataset:
        parents: list[tf.Tensor] = []
        if ancestors:
            outputs = model(inputs, training=False, sample=False, components=ancestors, decode=False)
            parents = [outputs[p][module.conditioned_on] for p in module.parents]
        z_hat = module.hierarchical_encoder(tf.cast(inputs["latent"][component], module.compute_dtype), parents)
        n = tf.shape(z_hat)[0]
        rows = ([inputs["batch"][target]] if codes is None
                else [tf.tile(tf.constant(c[None, :]), [n, 1]) for c in codes])
        mean = tf.add_n([likelihood.normalized_mean(decoder(z_hat, row), library_size) for row in rows]) / len(rows)
        parts.append(tf.cast(mean, tf.float32).numpy())
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
        if model.distribute_strategy.num_replicas_in_sync > 1:
            raise ValueError(f"components {list(tables)} learn one latent per cell (posterior: representation), "
                             "which trains on one device only for now: fit without a multi-replica strategy.")
        index = {}
        for name, table in tables.items():
            if not table.has_cells:
                table.assign_cells(data.obs_names)
            untrained = not np.asarray(table.steps).any() and not np.asarray(table.embeddings).any()
            if table.start == "pca" and untrained:  # start from the data (once: fit makes two datasets)
                start = pca_start(data, model.graph.modalities(name), table.latent_dim, table.start_scale,
                                  seed=model.seed or 0)
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
        latents[new] = model.predict_new(data[new], components=[component])[f"z_{component}"]
    return latents
