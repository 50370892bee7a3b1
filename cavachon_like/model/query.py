"""Query mapping for CAVACHON: scArches' architecture surgery, then training of the new batch weights only.

A trained model knows a fixed set of batch categories: each modality's one-hot
covariates enter the encoders that condition on them (``condition_on_batch``) and every
decoder, through the rows of a weight matrix that multiplies the one-hot (the batch
input projection of an :class:`~cavachon_like.nn.MLP`, or the batch rows at the end of
a Conv1D module's dense kernel). Mapping a query with new categories (scvi-tools'
``load_query_data``, scArches' surgery):

1. **Extend.** A copy of the model is built with the new categories appended to each
   batch column (:func:`extend_model`). Every weight is the reference's; a kernel that
   reads a one-hot keeps the reference's rows (moved to the categories' new positions)
   and gets one row per new category, initialised to the mean of the rows of the
   reference categories of the same column (``init="mean"``): at the start, a query cell
   is read as the average reference batch, the natural neutral point, whereas a zero row
   would drop the offset that all of the reference rows share (in a one-hot layer that
   offset is not in the bias) and start the query far from every batch. ``init="zeros"``
   is scvi's choice for comparison (it keeps the random initialisation; zeros at least
   make it deterministic).
2. **Train the new rows only.** The query alone trains, stage by stage in the model's
   own training plan (topological order, or one stage for ``training="joint"``), each
   stage's components with their ELBO, through the model's own ``train_step`` and
   ``fit`` machinery (a phase of :func:`~cavachon_like.model.stages.fit_phase`, with its
   history and shuffling). Every layer is
   frozen (``trainable=False``, so batch normalisation runs in inference mode and its
   statistics stay; the mixture priors, the codebooks of quantised latents and the
   preprocessors' statistics stay too); only the kernels that read the batch are
   trainable, and :class:`RowMaskedAdam` zeroes their gradient outside the new rows, so
   Adam never moves a reference row (its moments stay exactly zero). The reference
   weights are therefore bit-identical after mapping, and so are the reference cells'
   latents.

What training can change: the query's latents move only through encoders that read the
batch (``condition_on_batch: true``, the default of ``conv1d`` encoders, not of ``mlp``
ones); decoders always read it, so the query's decoded data (normalised expression,
predictions) always adapts. With batch-blind encoders the latents are those of naive
integration, and the surgery is for the decoders.
"""
from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ..errors import InputError
from ..train import FitProgress, merge_histories, training_plan
from .mapping import DEFAULT_QUERY_NEIGHBORS, QueryMapping, align_features
from .stages import compile_phase, fit_phase

logger = logging.getLogger(__name__)

#: Initialisations of the new categories' rows (see the module docstring).
INITS = ("mean", "zeros")
#: Defaults of the query training: few weights train, so a larger step than the model's.
DEFAULT_QUERY_EPOCHS = 20
DEFAULT_QUERY_LEARNING_RATE = 1e-2

Categories = dict[str, dict[str, list[str]]]


@keras.saving.register_keras_serializable(package="cavachon_like")
class RowMaskedAdam(keras.optimizers.Adam):
    """Adam that updates only some rows of some variables; every other entry gets a zero gradient.

    With a zero gradient from the first step, Adam's moments of an entry stay exactly
    zero and so does its update: the entry is left bit for bit as it was.

    Parameters
    ----------
    rows
        ``{variable path: [row, ...]}``: the rows that train. A trainable variable not
        listed does not train at all.
    **kwargs
        Adam's arguments (``learning_rate``, ...). Weight decay would move the masked
        rows, so it is refused.
    """

    def __init__(self, rows: Mapping[str, Sequence[int]] | None = None, **kwargs: Any) -> None:
        if kwargs.get("weight_decay"):
            raise ValueError("RowMaskedAdam leaves the masked rows exactly as they are; weight decay would move them.")
        super().__init__(**kwargs)
        self.rows = {str(path): sorted(int(r) for r in rs) for path, rs in (rows or {}).items()}

    def apply(self, grads: Sequence[Any], trainable_variables: Sequence[Any] | None = None) -> None:
        """Zero each gradient outside its variable's rows, then Adam's step."""
        variables = self._trainable_variables if trainable_variables is None else list(trainable_variables)
        masked = []
        for gradient, variable in zip(grads, variables):
            if gradient is not None:
                mask = np.zeros((int(variable.shape[0]),) + (1,) * (len(variable.shape) - 1), np.float32)
                mask[self.rows.get(variable.path, [])] = 1.0
                gradient = tf.convert_to_tensor(gradient) * tf.constant(mask, dtype=gradient.dtype)
            masked.append(gradient)
        return super().apply(masked, trainable_variables)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rows": self.rows}


def query_categories(model: Any, query: Any) -> tuple[Categories, Categories]:
    """The query's batch categories that ``model`` lacks and those it knows.

    Returns
    -------
    new, known : dict
        ``{modality: {batch column: sorted categories}}``, only for columns that have any.
    """
    new: Categories = {}
    known: Categories = {}
    for m in model.modality_names:
        mod = query.modality(m)
        categories = model.batch_categories[m]
        # the model's batch columns only (other columns are the data set's business, refused when encoding)
        unseen = {col: cats for col, cats in mod.unseen_batch_categories(categories).items() if col in categories}
        if unseen:
            new[m] = unseen
        seen = {col: [c for c in cats if c not in unseen.get(col, [])] for col, cats in mod.batch_categories().items()
                if col in categories}
        seen = {col: cats for col, cats in seen.items() if cats}
        if seen:
            known[m] = seen
    return new, known


def _batch_readers(old: Any, new: Any) -> list[tuple[keras.layers.Layer, keras.layers.Layer, list[str]]]:
    """``(layer in old, same layer in new, modalities whose one-hots it reads)`` for every module
    of a component that is given batch covariates: its encoder (or each expert) and decoders."""
    mods = old.modalities
    if old.has_experts:
        readers = [(o, n, [m]) for o, n, m in zip(old.encoder.experts, new.encoder.experts, mods)]
    else:
        readers = [(old.encoder, new.encoder, list(mods))]
    return readers + [(old.decoders[m], new.decoders[m], [m]) for m in mods]


def _layout(categories: Mapping[str, Mapping[str, Sequence[str]]], mods: Sequence[str]) -> list[tuple[str, str, str]]:
    """``(modality, column, category)`` of each column of the one-hots of ``mods``, concatenated."""
    return [(m, col, cat) for m in mods for col, cats in categories[m].items() for cat in cats]


def _extended_kernel(old: np.ndarray, shape: Sequence[int], before: Categories, after: Categories,
                     added: Categories, mods: Sequence[str], init: str, where: str) -> tuple[np.ndarray, list[int]]:
    """The kernel ``old`` (whose last rows read the one-hots of ``mods`` laid out as ``before``)
    for the layout ``after``: the reference rows moved to their categories' positions, the
    ``added`` categories' rows initialised; returns it and those rows."""
    old_layout, new_layout = _layout(before, mods), _layout(after, mods)
    n_other = old.shape[0] - len(old_layout)
    if len(shape) != 2 or old.ndim != 2 or n_other < 0 or tuple(shape) != (n_other + len(new_layout), old.shape[1]):
        raise NotImplementedError(
            f"cannot add batch categories to {where} (shape {tuple(old.shape)} -> {tuple(shape)}): the query surgery "
            "extends 2-D kernels whose last rows read the batch one-hot (MLP and Conv1D encoders and decoders).")
    position = {key: n_other + i for i, key in enumerate(new_layout)}
    value = np.zeros(tuple(shape), dtype=old.dtype)
    value[:n_other] = old[:n_other]
    for i, key in enumerate(old_layout):
        value[position[key]] = old[n_other + i]
    rows = []
    for m in mods:
        for col, cats in added.get(m, {}).items():
            block = [n_other + i for i, key in enumerate(old_layout) if key[:2] == (m, col)]
            start = old[block].astype(np.float64).mean(axis=0) if init == "mean" and block else 0.0
            for cat in cats:
                value[position[(m, col, cat)]] = start
                rows.append(position[(m, col, cat)])
    return value, sorted(rows)


def extend_model(model: Any, new_categories: Categories, init: str = "mean") -> tuple[Any, dict[str, list[int]]]:
    """A copy of ``model`` that also knows ``new_categories``, with the reference's weights.

    Parameters
    ----------
    model
        A trained :class:`~cavachon_like.model.CAVACHON`; it is not modified.
    new_categories
        ``{modality: {batch column: [category, ...]}}`` to append (see :func:`query_categories`).
    init
        ``"mean"`` (the mean of the column's reference rows) or ``"zeros"``: the start
        of each new category's rows (see the module docstring).

    Returns
    -------
    extended : CAVACHON
        Same configuration and weights; its batch categories end with the new ones.
    rows : dict
        ``{variable path: [row, ...]}``: the new categories' rows of every kernel that
        reads a one-hot, the only entries the query trains.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}.")
    config = copy.deepcopy(model.get_config())
    before = model.batch_categories
    for m, columns in new_categories.items():
        for col, cats in columns.items():
            config["modalities"][m]["batch_categories"][col] = list(before[m][col]) + list(cats)
    with model.distribute_strategy.scope():
        extended = type(model).from_config(config)
    after = extended.batch_categories
    readers: dict[int, tuple[list[str], str]] = {}
    for name, component in model.components.items():
        for old_layer, new_layer, mods in _batch_readers(component, extended.components[name]):
            for old_v, new_v in zip(old_layer.weights, new_layer.weights):
                if tuple(old_v.shape) != tuple(new_v.shape):
                    readers[id(new_v)] = (mods, f"{type(new_layer).__name__} {new_v.path}")
    old_weights, new_weights = model.weights, extended.weights
    if len(old_weights) != len(new_weights):
        raise RuntimeError(f"the extended model has {len(new_weights)} weights, the reference {len(old_weights)}.")
    rows: dict[str, list[int]] = {}
    for old_v, new_v in zip(old_weights, new_weights):
        if tuple(old_v.shape) == tuple(new_v.shape):
            new_v.assign(old_v)
        elif id(new_v) in readers:
            mods, where = readers[id(new_v)]
            value, rows[new_v.path] = _extended_kernel(np.asarray(old_v), new_v.shape, before, after,
                                                       new_categories, mods, init, where)
            new_v.assign(value)
        else:
            raise NotImplementedError(f"{new_v.path} changes shape with the batch categories "
                                      f"({tuple(old_v.shape)} -> {tuple(new_v.shape)}) but is not in an encoder or "
                                      "decoder; the query surgery does not know how to extend it.")
    shared = sorted(path for path in rows if sum(v.path == path for v in new_weights) > 1)
    if shared:  # the masked optimizer finds the rows by path
        raise RuntimeError(f"several weights of the extended model have the path of a batch kernel: {shared}.")
    extended._compile_kwargs = copy.deepcopy(model._compile_kwargs)
    return extended, rows


def train_new_rows(model: Any, query: Any, rows: Mapping[str, Sequence[int]], epochs: int = DEFAULT_QUERY_EPOCHS,
                   batch_size: int = 128, learning_rate: float = DEFAULT_QUERY_LEARNING_RATE,
                   callbacks: Sequence[keras.callbacks.Callback] | None = None,
                   verbose: Any = 0) -> keras.callbacks.History | None:
    """Train only the ``rows`` of an extended model on ``query``, stage by stage.

    Each stage of the model's training plan whose components hold such rows runs
    ``epochs`` epochs of the model's own ``fit`` phase (its ``train_step``: the stage's
    ELBO), with every layer frozen, only the kernels in ``rows`` trainable and
    :class:`RowMaskedAdam` (``learning_rate``) keeping their other rows still. The model
    ends as ``fit`` leaves one: every component trainable, compiled with its own
    optimizer settings. Returns the merged History (``stage``, ``phase="query"``,
    ``loss``, ...) or None when no stage had rows to train.
    """
    progress = FitProgress(None, {"query": sorted(rows)})
    dataset = model.make_dataset(query, batch_size=batch_size, shuffle=True, order=progress.order)
    missing = sorted(set(rows) - {v.path for v in model.weights})
    if missing:
        raise ValueError(f"rows name weights the model does not have: {missing}.")
    compile_kwargs = copy.deepcopy(model._compile_kwargs)
    phases = []
    try:
        model.kl_weight.assign(1.0)
        for stage in training_plan(model.graph.order, model.training_mode):
            variables = [v for c in stage for v in model.components[c].weights if rows.get(v.path)]
            if not variables:
                continue
            model._set_active(stage)  # the stage's forward pass and loss (train_step)
            for component in model.components.values():
                # Everything frozen (batch normalisation in inference mode). Through True: Keras skips
                # setting a layer to the value it has, which would leave the last stage's kernels trainable.
                component.trainable = True
                component.trainable = False
            for variable in variables:
                variable.trainable = True
            model.compile(optimizer=RowMaskedAdam({v.path: rows[v.path] for v in variables},
                                                  learning_rate=learning_rate))
            phase = progress.next_phase()
            fit_phase(model, progress, phase, list(callbacks or []), epochs=epochs, x=dataset, verbose=verbose)
            phases.append(("+".join(stage), "query", progress.history(phase)))
    finally:
        model._compile_kwargs = compile_kwargs
        model._set_active(model.graph.order)
        compile_phase(model, build=False)
    return merge_histories(phases) if phases else None


def map_query(
    model: Any,
    query: Any,
    reference: Any = None,
    label_key: str | None = None,
    latent: str | None = None,
    n_neighbors: int = DEFAULT_QUERY_NEIGHBORS,
    reindex: bool = False,
    batch_size: int = 1024,
    epochs: int = DEFAULT_QUERY_EPOCHS,
    learning_rate: float = DEFAULT_QUERY_LEARNING_RATE,
    training_batch_size: int = 128,
    init: str = "mean",
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    verbose: Any = 0,
    new_covariates: bool = False,
) -> QueryMapping:
    """:meth:`CAVACHON.map_query <cavachon_like.model.CAVACHON.map_query>`: extend, train the new rows, map.

    Parameters
    ----------
    model
        The trained reference model; it is not modified.
    query, reference, label_key, latent, n_neighbors, reindex, batch_size
        See :meth:`MultimodalModel.map_query <cavachon_like.model.MultimodalModel.map_query>`.
    epochs
        Epochs of query training per stage that has new weights.
    learning_rate
        Adam's step for the new rows (only a few weights train, hence larger than a
        model's usual 1e-3).
    training_batch_size
        Cells per training batch.
    init
        Start of the new rows: ``"mean"`` of the column's reference rows, or ``"zeros"``.
    callbacks, verbose
        As in ``fit`` (e.g. ``EarlyStopping`` on ``loss``).
    new_covariates
        For a model without encoders (multiDGD, ``posterior: representation``): nothing is
        extended or trained; the query's latents are inferred against the frozen model
        (``predict_new``), cells of batches it has not seen placed under the known batches'
        covariate components (naive integration) or, with ``new_covariates``, a new one per
        batch (this needs the covariate model, ``representation: {covariate_dim: ...}``).

    Returns
    -------
    QueryMapping
        ``model`` is the extended model (the reference model itself when the query has
        no new category: then nothing trains and the query is mapped as the known
        batches, which is logged).
    """
    started = time.perf_counter()
    if init not in INITS:
        raise InputError(f"init must be one of {INITS}, got {init!r}.")
    if not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise InputError(f"epochs must be a non-negative integer, got {epochs!r}.")
    if reference is not None:
        query = align_features(query, reference, reindex=reindex, modalities=model.modality_names)
    QueryMapping.check_options(model, reference, label_key, latent, n_neighbors)
    model.check_data(query)
    new, known = query_categories(model, query)
    if known:
        # a warning: a new library that reuses a known name would silently be read as that batch
        logger.warning("the query has batch categories the model already knows, mapped as those batches (rename them "
                       "if they are new batches): %s", _describe(known))
    if any(comp.posterior == "representation" for comp in model.components.values()):
        return _placed(model, query, reference, label_key, latent, n_neighbors, batch_size, new, known,
                       new_covariates, started)
    if not new:
        logger.info("the query has no new batch category: it is mapped by the model as it is, nothing trains")
        mapped, history = model, None
    else:
        logger.info("adding the query's batch categories %s; training only their weights (%d epochs per stage)",
                    _describe(new), epochs)
        mapped, rows = extend_model(model, new, init=init)
        history = None
        if epochs:
            history = train_new_rows(mapped, query, rows, epochs=epochs, batch_size=training_batch_size,
                                     learning_rate=learning_rate, callbacks=callbacks, verbose=verbose)
    return QueryMapping.from_model(mapped, query, reference, label_key, latent=latent, n_neighbors=n_neighbors,
                                   batch_size=batch_size, new_categories=new, known_categories=known,
                                   history=history, seconds=time.perf_counter() - started)


def _placed(model: Any, query: Any, reference: Any, label_key: str | None, latent: str | None, n_neighbors: int,
            batch_size: int, new: Categories, known: Categories, new_covariates: bool, started: float) -> QueryMapping:
    """:func:`map_query` for a model without encoders: the query's latents by ``predict_new``."""
    with_encoder = [c for c, comp in model.components.items() if comp.posterior != "representation"]
    if with_encoder:
        raise InputError(f"components {with_encoder} have encoders and the others none; map_query handles models "
                         "whose components all have encoders (scArches' surgery) or none (predict_new).")
    one_hot = [c for c, comp in model.components.items() if comp.covariates is None]
    if new and one_hot:
        raise InputError(f"the query has batches the model has not seen ({_describe(new)}) and components {one_hot} "
                         "read the batch as a one-hot, which has no column for them: train with representation: "
                         "{covariate_dim: 2} (multiDGD's covariate model), which places such cells naively or under "
                         "a new covariate component (new_covariates=True).")
    logger.info("placing the query by inference against the frozen model%s", f" (new batches: {_describe(new)}, "
                f"{'a new covariate component each' if new_covariates else 'naive integration'})" if new else "")
    # inference decodes every feature of a batch once per prior mode: batches of at most 256 cells bound its memory
    latents = model.predict_new(query, new_covariates=new_covariates, batch_size=min(batch_size, 256))
    for c in model.latent_names:
        prior = model.components[c].prior
        if getattr(prior, "n_clusters", None):
            latents[f"cluster_probabilities_{c}"] = prior.cluster_probabilities(latents[f"z_{c}"]).numpy()
    return QueryMapping.from_model(model, query, reference, label_key, latent=latent, n_neighbors=n_neighbors,
                                   batch_size=batch_size, latents=latents, new_categories=new, known_categories=known,
                                   seconds=time.perf_counter() - started)


def _describe(categories: Categories) -> str:
    """``rna.batch: ['b3', 'b4']; atac.batch: [...]``, for messages."""
    return "; ".join(f"{m}.{col}: {cats}" for m, columns in categories.items() for col, cats in columns.items())
