"""Query mapping shared by every model family: kNN label transfer, feature alignment and the result.

:meth:`MultimodalModel.map_query <cavachon_like.model.MultimodalModel.map_query>` places new
cells in a trained model; how the model is extended and trained is the family's own (CAVACHON:
:mod:`cavachon_like.model.query`). What comes after uses only the public model interface and
lives here: the query's features are checked against the reference's by name
(:func:`align_features`), each query cell takes the majority label of its nearest reference
cells (:func:`transfer_labels`, with :func:`self_transfer_accuracy` as the reference's own
yardstick), and :class:`QueryMapping` holds the result and writes it into the query data.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .annotation import write_latents

if TYPE_CHECKING:  # annotations only: the interface imports this module
    from .base import MultimodalModel

logger = logging.getLogger(__name__)

#: Reference neighbours whose labels a query cell takes by majority in
#: :meth:`MultimodalModel.map_query <cavachon_like.model.MultimodalModel.map_query>`.
DEFAULT_QUERY_NEIGHBORS = 15


def transfer_labels(
    reference_latent: np.ndarray,
    reference_labels: Sequence[Any] | pd.Series,
    query_latent: np.ndarray,
    n_neighbors: int = DEFAULT_QUERY_NEIGHBORS,
    index: Sequence[Any] | None = None,
) -> pd.DataFrame:
    """kNN label transfer: each query cell takes the majority label of its nearest reference cells.

    Parameters
    ----------
    reference_latent, query_latent
        Cells x dims, in one latent space (Euclidean distances).
    reference_labels
        One label per reference cell; cells without one (NaN) are left out.
    n_neighbors
        Reference neighbours per query cell (uniform votes; a tie goes to the label seen
        first among the reference cells).
    index
        Names of the query cells (the result's index); default positions.

    Returns
    -------
    pandas.DataFrame
        One row per query cell: ``label`` and ``confidence``, the fraction of its
        ``n_neighbors`` neighbours that carry that label (``1 - confidence`` is
        scArches' uncertainty without its distance weighting).
    """
    reference_latent, labels = _labelled(reference_latent, reference_labels)
    query_latent = np.asarray(query_latent, dtype=np.float32)
    if query_latent.ndim != 2 or query_latent.shape[1] != reference_latent.shape[1]:
        raise ValueError(f"the query latent must be cells x {reference_latent.shape[1]} dims as the reference's, "
                         f"got shape {query_latent.shape}.")
    _check_neighbors(n_neighbors, len(labels))
    from sklearn.neighbors import NearestNeighbors

    codes, classes = pd.factorize(labels)
    neighbours = NearestNeighbors(n_neighbors=n_neighbors).fit(reference_latent).kneighbors(
        query_latent, return_distance=False)
    label, confidence = _vote(codes[neighbours], len(classes))
    return pd.DataFrame({"label": pd.Categorical(classes[label], categories=classes), "confidence": confidence},
                        index=pd.Index(index) if index is not None else None)


def self_transfer_accuracy(latent: np.ndarray, labels: Sequence[Any] | pd.Series,
                           n_neighbors: int = DEFAULT_QUERY_NEIGHBORS) -> float:
    """Leave-one-out kNN label transfer within one set of cells: the fraction whose majority label
    among their ``n_neighbors`` nearest *other* cells is their own (cells without a label are
    left out). On a reference, the yardstick of :func:`transfer_labels` to a query."""
    latent, labels = _labelled(latent, labels)
    _check_neighbors(n_neighbors, len(labels) - 1)
    from sklearn.neighbors import NearestNeighbors

    codes, classes = pd.factorize(labels)
    index = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(latent).kneighbors(latent, return_distance=False)
    # each cell's neighbours without itself (usually first, but a duplicate of it may come first;
    # where it is not among them at all, the farthest is dropped instead)
    keep = index != np.arange(len(index))[:, None]
    keep[keep.all(axis=1), -1] = False
    label, _ = _vote(codes[index[keep].reshape(len(index), n_neighbors)], len(classes))
    return float(np.mean(label == codes))


def _labelled(latent: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """The cells x dims ``latent`` and string ``labels`` of the cells that have a label."""
    latent = np.asarray(latent, dtype=np.float32)
    labels = np.asarray(pd.Series(labels).astype(object), dtype=object)
    if latent.ndim != 2:
        raise ValueError(f"a latent must be cells x dims, got shape {latent.shape}.")
    if len(labels) != len(latent):
        raise ValueError(f"{len(labels)} labels for {len(latent)} cells.")
    keep = ~pd.isna(labels)
    return latent[keep], labels[keep].astype(str)


def _check_neighbors(n_neighbors: Any, n_cells: int) -> None:
    if not isinstance(n_neighbors, (int, np.integer)) or not 1 <= n_neighbors <= n_cells:
        raise ValueError(f"n_neighbors must be an integer from 1 to {n_cells} (the labelled reference cells), "
                         f"got {n_neighbors!r}.")


def _vote(neighbour_codes: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Majority label code per row and the fraction of the row that votes for it."""
    counts = np.zeros((len(neighbour_codes), n_classes), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(len(neighbour_codes)), neighbour_codes.shape[1]),
                       neighbour_codes.ravel()), 1)
    label = counts.argmax(axis=1)
    return label, (counts.max(axis=1) / max(neighbour_codes.shape[1], 1)).astype(np.float32)


def align_features(query: Any, reference: Any, reindex: bool = False, modalities: Sequence[str] | None = None) -> Any:
    """``query`` with the features of ``reference`` (by name, in its order), modality by modality.

    Identical features pass through; the same features in another order are reordered.
    Otherwise the missing and extra features are an error naming them, unless
    ``reindex``: then extra features are dropped and missing ones filled with zeros
    (logged with how many; zeros read as "not detected", so use it only for a few).

    Parameters
    ----------
    query, reference
        :class:`~cavachon_like.data.MultiModality` objects.
    reindex
        Take the reference's features even when some are missing or extra.
    modalities
        The modalities to align (the query must have them); default all of the reference's.

    Returns
    -------
    MultiModality
        ``query`` itself when nothing changed, else an aligned copy (same cells, obs,
        likelihoods and batch keys).

    Raises
    ------
    cavachon_like.errors.InputError
        For a missing modality, or differing features without ``reindex``.
    """
    import anndata as ad
    import scipy.sparse as sp

    from ..data import MultiModality
    from ..data.groups import name_examples
    from ..errors import InputError

    names = list(reference.mod) if modalities is None else list(modalities)
    missing_mods = [m for m in names if m not in query.mod or m not in reference.mod]
    if missing_mods:
        raise InputError(f"modalities {missing_mods} are not in both the query ({list(query.mod)}) and the reference "
                         f"({list(reference.mod)}).")
    changed, problems = {}, []
    for m in names:
        ref, mod = reference.mod[m], query.mod[m]
        if mod.var_names.equals(ref.var_names):
            continue
        missing = ref.var_names.difference(mod.var_names, sort=False)
        extra = mod.var_names.difference(ref.var_names, sort=False)
        if (len(missing) or len(extra)) and not reindex:
            problems.append(f"modality {m!r}: {len(missing)} of the reference's {ref.n_vars} features are missing"
                            + (f" (e.g. {name_examples(missing)})" if len(missing) else "")
                            + f" and {len(extra)} are extra" + (f" (e.g. {name_examples(extra)})" if len(extra) else ""))
            continue
        # a 0/1 matrix taking the query's column of each reference feature (none: a zero column)
        where = mod.var_names.get_indexer(ref.var_names)
        present = np.flatnonzero(where >= 0)
        dtype = mod.X.dtype if np.issubdtype(mod.X.dtype, np.floating) else np.float32
        select = sp.csr_matrix((np.ones(len(present), dtype=dtype), (where[present], present)),
                               shape=(mod.n_vars, ref.n_vars))
        columns = mod.X @ select
        columns = sp.csr_matrix(columns) if sp.issparse(mod.X) else np.asarray(columns)
        aligned = ad.AnnData(columns, obs=mod.obs.copy(), var=ref.var.copy(), uns=dict(mod.uns))
        changed[m] = aligned
        how = (f"took the reference's {ref.n_vars} features: {len(missing)} missing ones filled with zeros, "
               f"{len(extra)} extra ones dropped" if len(missing) or len(extra) else "reordered its features as the reference's")
        logger.info("modality %r of the query: %s", m, how)
    if problems:
        raise InputError("the query's features differ from the reference's:\n  - " + "\n  - ".join(problems)
                         + "\nGive the query the reference's features, or pass reindex=True (--reindex) to take them "
                           "by name, filling the missing ones with zeros.")
    if not changed:
        return query
    import mudata as md

    from ..data.multimodality import no_pull

    mods = {m: changed.get(m, mod) for m, mod in query.mod.items()}
    with no_pull():
        aligned = md.MuData(mods, obs=query.obs.copy(), uns=dict(query.uns),
                            obsm={k: v for k, v in query.obsm.items() if k not in mods})
    return MultiModality(aligned)


@dataclass
class QueryMapping:
    """Query cells placed in a trained model: what
    :meth:`~cavachon_like.model.MultimodalModel.map_query` returns.

    Attributes
    ----------
    model
        The model the query was mapped with: the reference model extended with the
        query's new batch categories (their weights trained on the query, every other
        weight the reference's), or the reference model itself when nothing was new.
    latents
        :meth:`~cavachon_like.model.MultimodalModel.get_latent_representation` of the query
        cells under ``model``.
    clusters
        ``{latent: cluster per query cell}`` (argmax of the cluster probabilities), for
        the latents with a mixture prior.
    labels
        With a ``label_key``: one row per query cell (indexed by its name) with the
        transferred ``label`` and its ``confidence`` (see :func:`transfer_labels`); else None.
    new_categories
        ``{modality: {batch column: [category, ...]}}`` the query added to the model.
    known_categories
        The query's categories the model already knew, mapped as those batches.
    history
        Per-epoch logs of the query training (a Keras History with ``stage`` and
        ``phase`` columns), or None when nothing was trained.
    seconds
        Wall time of the whole mapping.
    latent, label_key, n_neighbors
        The label transfer's settings.
    accuracy
        When the query has ``label_key`` too: the fraction of query cells whose
        transferred label is their own; else None.
    reference_accuracy
        With a ``label_key``: the same transfer among the reference cells, each from its
        nearest *other* reference cells (:func:`self_transfer_accuracy`): what
        ``accuracy`` compares with.
    obs_names
        The query cells' names, in the order of every array above.
    """

    model: Any
    latents: dict[str, np.ndarray]
    clusters: dict[str, np.ndarray]
    labels: pd.DataFrame | None = None
    new_categories: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    known_categories: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    history: Any = None
    seconds: float = 0.0
    latent: str | None = None
    label_key: str | None = None
    n_neighbors: int = DEFAULT_QUERY_NEIGHBORS
    accuracy: float | None = None
    reference_accuracy: float | None = None
    obs_names: pd.Index | None = None

    @staticmethod
    def check_options(model: MultimodalModel, reference: Any, label_key: str | None, latent: str | None,
                      n_neighbors: int) -> str:
        """Check the label-transfer options before any training; returns the latent to use.

        Raises
        ------
        cavachon_like.errors.InputError
            For a ``label_key`` without a ``reference`` (or the reverse), a column the
            reference lacks, an unknown latent or an impossible ``n_neighbors``.
        """
        from ..errors import InputError

        names = list(model.latent_names)
        latent = names[-1] if latent is None else latent
        if latent not in names:
            raise InputError(f"unknown latent {latent!r}; the model has {names}.")
        if (reference is None) != (label_key is None):
            raise InputError("label transfer needs both the reference cells (reference=...) and the column of their "
                             "labels (label_key=...); pass both, or neither to map without transferring labels.")
        if reference is not None:
            labels = _obs_column(reference, label_key)
            if labels is None:
                raise InputError(f"the reference has no obs column {label_key!r}; columns: {list(reference.obs.columns)}.")
            n_labelled = int((~pd.isna(np.asarray(labels, dtype=object))).sum())
            try:
                _check_neighbors(n_neighbors, n_labelled)
            except ValueError as error:
                raise InputError(str(error)) from error
        return latent

    @classmethod
    def from_model(cls, model: MultimodalModel, query: Any, reference: Any = None, label_key: str | None = None,
                   latent: str | None = None, n_neighbors: int = DEFAULT_QUERY_NEIGHBORS, batch_size: int = 1024,
                   latents: dict[str, np.ndarray] | None = None, **details: Any) -> QueryMapping:
        """Latents, clusters and transferred labels of ``query`` under ``model`` (a mapped model).

        Uses only the public interface, so every family shares it. ``latents`` are the
        query's, when already computed (default: ``get_latent_representation(query)``).
        ``details`` (``new_categories``, ``history``, ...) are stored as they are; ``seconds``
        is added to the time this takes.
        """
        import time

        started = time.perf_counter()
        latent = cls.check_options(model, reference, label_key, latent, n_neighbors)
        if latents is None:
            latents = model.get_latent_representation(query, batch_size=batch_size)
        prefix = "cluster_probabilities_"
        clusters = {k[len(prefix):]: np.asarray(v).argmax(axis=1) for k, v in latents.items() if k.startswith(prefix)}
        result = cls(model=model, latents=latents, clusters=clusters, latent=latent, label_key=label_key,
                     n_neighbors=int(n_neighbors), obs_names=pd.Index(query.obs_names), **details)
        if label_key is not None:
            key = f"z_{latent}"
            reference_z = model.get_latent_representation(reference, batch_size=batch_size)[key]
            reference_labels = _obs_column(reference, label_key)
            result.labels = transfer_labels(reference_z, reference_labels, latents[key], n_neighbors,
                                            index=query.obs_names)
            result.reference_accuracy = self_transfer_accuracy(reference_z, reference_labels, n_neighbors)
            own = _obs_column(query, label_key)
            if own is not None:
                own = np.asarray(own, dtype=object)
                known = ~pd.isna(own)
                if known.any():
                    result.accuracy = float(np.mean(result.labels["label"].astype(str).to_numpy()[known]
                                                    == own[known].astype(str)))
        result.seconds += time.perf_counter() - started
        return result

    def annotate(self, data: Any) -> list[str]:
        """Write the mapping into ``data`` (the query cells, in the same order) in scverse conventions.

        ``obsm["z_<latent>"]`` and the other latents, ``obs["cluster_<latent>"]``
        (categorical), with a label transfer ``obs["<label_key>_transferred"]``
        (categorical) and ``obs["<label_key>_confidence"]``, and the mapping's summary
        as JSON in ``uns["cavachon_like"]["query"]``. Returns the keys written
        (``"obsm/z_rna"``, ``"obs/cluster_rna"``, ...).
        """
        if self.obs_names is not None and not pd.Index(data.obs_names).equals(self.obs_names):
            raise ValueError(f"annotate needs the {len(self.obs_names)} query cells of the mapping, in its order; "
                             f"got {data.n_obs} cells{' in another order' if data.n_obs == len(self.obs_names) else ''}.")
        written = write_latents(data, self.latents)
        if self.labels is not None:
            data.obs[f"{self.label_key}_transferred"] = self.labels["label"].array
            data.obs[f"{self.label_key}_confidence"] = self.labels["confidence"].to_numpy()
            written += [f"obs/{self.label_key}_transferred", f"obs/{self.label_key}_confidence"]
        data.uns.setdefault("cavachon_like", {})
        data.uns["cavachon_like"]["query"] = json.dumps(self.summary(), default=str)
        written.append("uns/cavachon_like/query")
        return written

    def summary(self) -> dict[str, Any]:
        """The mapping's settings and numbers, JSON-ready (no arrays); ``epochs`` per training stage
        of the new batches' weights (``{"atac": 20, "rna": 20}``, empty when none trained)."""
        stages = [] if self.history is None else list(self.history.history.get("stage", []))
        return {"new_categories": self.new_categories, "known_categories": self.known_categories,
                "latent": self.latent, "label_key": self.label_key, "n_neighbors": self.n_neighbors,
                "accuracy": self.accuracy, "reference_accuracy": self.reference_accuracy,
                "seconds": round(float(self.seconds), 3),
                "epochs": {stage: stages.count(stage) for stage in dict.fromkeys(stages)}}


def _obs_column(data: Any, key: str) -> pd.Series | None:
    """A cell annotation of ``data`` (global obs, else a modality's), or None."""
    if key in data.obs.columns:
        return data.obs[key]
    for mod in getattr(data, "mod", {}).values():
        if key in mod.obs.columns:
            return mod.obs[key]
    return None
