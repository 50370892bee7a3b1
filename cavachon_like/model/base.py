"""The public interface every model family implements, and what it gives for free.

Analyses, plots and the CLI use only the methods and properties of
:class:`MultimodalModel`. A new model family (another posterior, an encoder-free
model, ...) subclasses it, implements the abstract methods and gets latents,
differential expression, annotation and every analysis of ``cavachon-like analyze``.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .differential import DEFAULT_DELTA, DEFAULT_FDR, differential_expression
from .annotation import write_latents
from .mapping import DEFAULT_QUERY_NEIGHBORS, QueryMapping

# QueryMapping is needed for annotations only, but imported at runtime so that references to
# cavachon_like.model.base.QueryMapping (where it was defined before) still resolve; mapping imports
# this module only for type checking, so there is no cycle.

if TYPE_CHECKING:  # the return type only; the module imports TensorFlow, which the interface need not
    from .traversal import LatentTraversal


class MultimodalModel:
    """Interface of a trained multi-modal model (in the spirit of scvi-tools' model classes).

    Subclasses implement (the base raises ``NotImplementedError``) the structure properties, :meth:`get_latent_representation`,
    :meth:`get_normalized_expression` and :meth:`posterior_predictive_sample`;
    :meth:`conditional_attribution` where the model has a hierarchy of latents.
    """

    # ------------------------------------------------------------------ structure
    @property
    def modality_names(self) -> list[str]:
        """Modalities the model generates, in training order."""
        raise NotImplementedError(f"{type(self).__name__} must implement this method.")

    @property
    def latent_names(self) -> list[str]:
        """Latent spaces; each is ``obsm["z_<name>"]`` after :meth:`annotate`."""
        raise NotImplementedError(f"{type(self).__name__} must implement this method.")

    def latent_modalities(self, latent: str) -> list[str]:
        """Modalities decoded from the latent space ``latent``."""
        raise NotImplementedError(f"{type(self).__name__} must implement this method.")

    def batch_keys(self, modality: str) -> list[str]:
        """Obs columns the model treats as batch covariates of ``modality``."""
        raise NotImplementedError(f"{type(self).__name__} must implement this method.")

    def modality_support(self, modality: str) -> str:
        """What ``modality``'s likelihood models: ``"counts"`` (e.g. genes), ``"binary"``
        (e.g. peaks read as open or closed) or ``"real"``."""
        raise NotImplementedError(f"{type(self).__name__} must implement this method.")

    @property
    def attributable_latents(self) -> list[str]:
        """Latents with a conditional attribution (those with parents); none by default."""
        return []

    # ------------------------------------------------------------------ per cell
    def get_latent_representation(self, data: Any, batch_size: int = 1024) -> dict[str, np.ndarray]:
        """Posterior means ``z_<latent>`` (cells x dims), for latents with a mixture
        prior ``cluster_probabilities_<latent>`` (cells x clusters), and for quantised
        latents ``code_<latent>`` (cells,): the index of each cell's codebook entry, a
        discrete cell state."""
        raise NotImplementedError(f"{type(self).__name__} must implement this method.")

    def get_normalized_expression(
        self,
        data: Any,
        modality: str,
        indices: Sequence[int] | np.ndarray | None = None,
        library_size: float = 1e4,
        transform_batch: str | Mapping[str, str] | None = None,
        n_samples: int | None = None,
        return_samples: bool = False,
        seed: int = 0,
        batch_size: int = 1024,
    ) -> np.ndarray:
        """Decoded means of ``modality`` for the cells ``indices`` (default all), float32.

        Parameters
        ----------
        library_size
            Likelihoods with a library size are decoded at ``library_size``: count
            modalities as expected counts per ``library_size`` total counts (counts per
            10,000 by default), binary ones as the probability of detection at that
            depth; others give their mean and ignore it.
        transform_batch
            ``None``: each cell's own batch; ``"all"``: the average over every batch
            combination present in ``data`` (removes batch effects); or
            ``{batch column: category}`` to decode every cell as that batch.
        n_samples
            ``None`` decodes the posterior mean; an integer draws that many
            posterior samples per cell (seeded by ``seed``) and averages them, or
            returns them all with ``return_samples`` (shape samples x cells x features).

        Returns
        -------
        numpy.ndarray
            cells x features (dense: pass ``indices`` to bound memory).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement this method.")

    def posterior_predictive_sample(
        self,
        data: Any,
        modality: str,
        indices: Sequence[int] | np.ndarray | None = None,
        n_samples: int = 1,
        seed: int = 0,
        batch_size: int = 1024,
    ) -> np.ndarray:
        """Data drawn from the model for the cells ``indices``: a posterior latent per
        draw, decoded with the cell's own batch and library size, then sampled from the
        likelihood. Shape samples x cells x features (dense)."""
        raise NotImplementedError(f"{type(self).__name__} must implement this method.")

    def predict_modality(
        self,
        data: Any,
        target: str,
        library_size: float = 1e4,
        n_samples: int = 25,
        transform_batch: Any = None,
        seed: int = 0,
        batch_size: int = 1024,
        log1p: bool = False,
        depth: Any = None,
    ) -> np.ndarray:
        """Decoded means of modality ``target`` predicted from the *other* modalities of each
        cell (the cells need not have ``target``), normalised to ``library_size``, cells x
        features. How a family predicts is its own (CAVACHON: through the DAG, from the
        target's ancestors, with the target's latent drawn ``n_samples`` times from its
        prior). ``transform_batch`` as in :meth:`get_normalized_expression`; needed when the
        cells lack ``target`` and it has batch covariates.

        With ``log1p``, the prediction is instead the expected *log-normalised* value,
        ``E[log1p(library_size * x / depth)]`` for counts ``x`` drawn from the likelihood at
        library size ``depth`` (averaged over the same draws): what log-normalised data
        (scanpy's ``normalize_total`` + ``log1p``) are compared with. At the few hundred counts
        per cell of many single-cell assays, the log of the mean overstates rare features,
        most of whose values are 0. ``depth`` is a number or one per cell; ``"median"``, the
        median library size of ``target`` over the model's training cells; by default each
        cell's library size of ``target`` predicted from those of its other modalities (a
        log-linear fit the model recorded on its training data, as ``modality_specs[target]
        ["library_size_from"]``; paired modalities share a cell's capture efficiency), and
        the median for cells without such a modality."""
        raise NotImplementedError(f"{type(self).__name__} must implement this method.")

    def marginal_log_likelihood(
        self,
        data: Any,
        n_samples: int = 100,
        indices: Sequence[int] | np.ndarray | None = None,
        seed: int = 0,
        batch_size: int = 256,
    ) -> np.ndarray:
        """Importance-sampled ``log p(x)`` of each cell (nats, all modalities), with
        ``n_samples`` posterior draws; its mean over held-out cells compares configurations."""
        raise NotImplementedError(f"{type(self).__name__} must implement this method.")

    def latent_traversal(
        self,
        data: Any,
        latent: str,
        n_steps: int = 21,
        span: float = 5.0,
        library_size: float = 1e4,
        transform_batch: str | Mapping[str, str] = "all",
        batch_size: int = 1024,
    ) -> LatentTraversal:
        """Pseudocells along each dimension of ``latent``, decoded (scMM's latent traversal).

        Dimension ``d`` moves from ``-span`` to ``+span`` standard deviations in ``n_steps``
        equal steps while the other dimensions stay at the population's centre: with ``m_d``
        and ``s_d`` the mean and SD over the cells of ``data`` of the posterior means, the
        pseudocell at step ``t`` has ``z = m`` and ``z_d = m_d + t * s_d``. What the latent
        depends on besides itself (a family's parents, say) is held at its population mean.

        Parameters
        ----------
        library_size
            As in :meth:`get_normalized_expression`.
        transform_batch
            ``"all"`` averages the decoded means over every batch combination present in
            ``data``; ``{batch column: category}`` decodes as that batch. A pseudocell
            has no batch of its own, so ``None`` is an error.

        Returns
        -------
        cavachon_like.model.traversal.LatentTraversal
            ``steps`` (in SDs), ``decoded[modality]`` of shape
            ``(latent_dim, n_steps, n_features)`` for every modality of :meth:`latent_modalities`,
            the feature names, and ``center``/``scale`` (``m`` and ``s``).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement this method.")

    def conditional_attribution(self, data: Any, latent: str, **kwargs: Any) -> pd.DataFrame:
        """How much ``latent``, beyond its parents, shapes each cell's decoded data.

        Only models with a hierarchy of latents implement it; see
        :attr:`attributable_latents`.
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no hierarchy of latents, so conditional attribution does not apply; "
            f"attributable latents: {self.attributable_latents}."
        )

    def map_query(
        self,
        query: Any,
        reference: Any = None,
        label_key: str | None = None,
        latent: str | None = None,
        n_neighbors: int = DEFAULT_QUERY_NEIGHBORS,
        reindex: bool = False,
        batch_size: int = 1024,
        **training: Any,
    ) -> QueryMapping:
        """Place new cells, possibly from batches the model has never seen, in its latent spaces.

        The query's batch categories that the model does not know are added to the model
        (scArches' architecture surgery): every weight that reads the batch covariates gets
        weights for them, which are trained on the query alone while every other weight
        stays the reference's, bit for bit. The reference cells' latents are therefore
        unchanged, and the query cells land in the same spaces. Categories the model
        already knows are mapped as those batches (logged); a query without new
        categories trains nothing and is mapped by the model as it is. Then the query's
        latents and clusters are computed and, with a ``reference`` and ``label_key``, each
        query cell takes the majority label of its ``n_neighbors`` nearest reference cells
        in ``latent`` (kNN label transfer,
        :func:`~cavachon_like.model.mapping.transfer_labels`).

        Parameters
        ----------
        query
            The new cells (a :class:`~cavachon_like.data.MultiModality` with the model's
            modalities and batch columns).
        reference
            Cells the model was trained on, with ``label_key``: the labels to transfer. With
            a reference, the query's features are also checked by name against it.
        label_key
            Column of ``reference.obs`` with the labels; reference cells without one are
            left out of the transfer.
        latent
            Latent space of the label transfer; default the last of :attr:`latent_names`.
        n_neighbors
            Reference neighbours per query cell.
        reindex
            When the query's features differ from the reference's: ``False`` raises naming
            the missing and extra features; ``True`` takes the reference's features in its
            order, missing ones filled with zeros (logged with how many); see
            :func:`~cavachon_like.model.mapping.align_features`.
        batch_size
            Cells per batch when computing latents.
        **training
            The family's training options (CAVACHON: :func:`cavachon_like.model.query.map_query`).

        Returns
        -------
        cavachon_like.model.mapping.QueryMapping
            The model the query was mapped with, the query's latents, clusters and
            transferred labels with their confidence; ``QueryMapping.annotate(query)``
            writes them into the query data.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement this method.")

    # ------------------------------------------------------------------ given by the interface
    def annotate(self, data: Any, batch_size: int = 1024) -> dict[str, np.ndarray]:
        """Write latents and clusters into ``data`` in scverse conventions.

        ``obsm["z_<latent>"]`` and every other matrix of :meth:`get_latent_representation`,
        its per-cell labels (such as ``code_<latent>``) as categorical ``obs`` columns,
        ``obs["cluster_<latent>"]`` (categorical argmax of the cluster probabilities)
        and the model's configuration as JSON in ``uns["cavachon_like"]["model"]``.
        """
        latents = self.get_latent_representation(data, batch_size=batch_size)
        write_latents(data, latents)
        data.uns.setdefault("cavachon_like", {})
        data.uns["cavachon_like"]["model"] = json.dumps(self.get_config(), default=str)
        return latents

    def differential_expression(
        self,
        data: Any,
        modality: str,
        groupby: str | None = None,
        group_a: Any = None,
        group_b: Any = None,
        delta: float = DEFAULT_DELTA,
        fdr_target: float = DEFAULT_FDR,
        **kwargs: Any,
    ) -> pd.DataFrame:
        """Differential expression of ``modality`` between two groups of cells.

        See :func:`cavachon_like.model.differential.differential_expression` for the
        method, the parameters in ``kwargs`` and the columns of the table.
        """
        return differential_expression(self, data, modality, groupby=groupby, group_a=group_a, group_b=group_b,
                                       delta=delta, fdr_target=fdr_target, **kwargs)
