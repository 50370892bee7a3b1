"""The CAVACHON model: components wired by a DAG, trained stage by stage."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from ..module import Component
from ..seed import seeded
from ..train import MODES, FusedAdam
from .attribution import conditional_attribution
from .base import MultimodalModel
from .decoding import normalized_expression, predictive_sample
from .graph import ComponentGraph
from .inference import (
    DEFAULT_INFERENCE_RATE,
    DEFAULT_STEPS,
    infer_latents,
    per_cell_inputs,
    predict_from_representation,
)
from .marginal import marginal_log_likelihood
from .perturbation import silencing_effects
from .prediction import predict_modality
from .specs import (
    check_components,
    check_data,
    check_measured,
    chromosome_sizes_of,
    default_units,
    make_component,
    modality_specs_of,
    normalize_modalities,
    with_absent_modalities,
    with_module_defaults,
)
from .stages import fit_model
from .steps import TrainingSteps
from .traversal import LatentTraversal, latent_traversal


@keras.saving.register_keras_serializable(package="cavachon_like")
class CAVACHON(TrainingSteps, keras.Model, MultimodalModel):
    """Hierarchical VAE over a user-given DAG of components (paper Eq. 1-3).

    Each component owns a latent z with a mixture-of-Gaussians prior and decodes its
    modalities from ``z_hat``, which incorporates the parents' latents (Eq. 2). The
    loss is the negative ELBO of Appendix A. ``fit`` trains stage by stage in
    topological order (Sec. 2.3): only the stage's components train, everything
    else is frozen, and a new component is blended in progressively. Each stage
    with a mixture prior follows VaDE's recipe: pre-training against a standard
    normal prior (with a KL warm-up), a diagonal GMM fitted to the latents to start
    the mixture, then the paper's ELBO.

    Parameters
    ----------
    modalities
        ``{modality: {"likelihood": alias, "n_features": int, "batch_key": [...],
        "batch_categories": {column: [category, ...]}}}``; :meth:`from_data` fills
        this in from a :class:`~cavachon_like.data.MultiModality`.
    components
        One dict per component: ``name``, ``modalities`` (list), and optionally
        ``parents`` (component or modality names), ``latent_dim`` (20),
        ``conditioned_on`` (``"z_hat"`` or ``"z"``), ``prior`` (alias or
        ``{"class": ..., **kwargs}``), ``n_clusters`` (shortcut for the mixture
        prior's K, default 2 * latent_dim + 1), ``encoder``, ``decoder``,
        ``hierarchical_encoder`` and ``preprocessor`` specs.
    training
        ``"sequential"`` (default) or ``"joint"``.
    progressive_epochs
        Epochs over which a component with parents is blended in (0 disables).
    pretrain_epochs
        Epochs of each stage that has a mixture prior trained against a standard
        normal prior before the mixture is fitted to the latents (VaDE). The KL
        weight ramps from 0 to 1 over the first half. Early stopping and the
        restoring of best weights see only the epochs after the fit; 0 trains the
        mixture from randomly placed means (the paper), which on SNARE-seq used
        1-2 of 41 clusters.
    prior_em_iterations
        At the end of each stage, at most this many EM iterations of the stage's
        mixture priors on the training cells' posteriors (``gamma = p(c|z)`` at the
        posterior means, then the ``pi, mu, var`` that minimise the KL term for that
        ``gamma``); 0 leaves the mixture where gradient descent left it. On SNARE-seq
        it raised the RNA clusters' NMI against cell types from 0.41 to 0.47.
    kl_warmup_epochs
        Epochs at the start of each stage's ELBO phase over which the weight of the KL
        terms ramps linearly from 0 to 1 (scMM's deterministic warm-up); 0 (default)
        trains the ELBO from the first epoch. The logged loss stays the unweighted
        negative ELBO, which is what early stopping sees.
    seed
        Seeds the model's own generators: initial weights, reparameterisation noise,
        the mixture fit and the shuffling of cells. Global random number generators
        are left as they were (:func:`cavachon_like.set_seed` seeds those).
    """

    def __init__(
        self,
        modalities: Mapping[str, Mapping[str, Any]],
        components: Sequence[Mapping[str, Any]],
        training: str = "sequential",
        progressive_epochs: int = 5,
        pretrain_epochs: int = 10,
        prior_em_iterations: int = 100,
        kl_warmup_epochs: int = 0,
        seed: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if training not in MODES:
            raise ValueError(f"training must be one of {MODES}, got {training!r}.")
        self.modality_specs = normalize_modalities(modalities)
        self.component_specs = [dict(c) for c in components]
        by_name = check_components(self.component_specs, self.modality_specs)
        self.graph = ComponentGraph(
            parents={n: list(c.get("parents", [])) for n, c in by_name.items()},
            modalities={n: list(c["modalities"]) for n, c in by_name.items()},
        )
        self.training_mode = training
        self.progressive_epochs = int(progressive_epochs)
        self.pretrain_epochs = int(pretrain_epochs)
        if self.pretrain_epochs < 0:
            raise ValueError(f"pretrain_epochs must be >= 0, got {pretrain_epochs}.")
        self.prior_em_iterations = int(prior_em_iterations)
        if self.prior_em_iterations < 0:
            raise ValueError(f"prior_em_iterations must be >= 0, got {prior_em_iterations}.")
        self.kl_warmup_epochs = int(kl_warmup_epochs)
        if self.kl_warmup_epochs < 0:
            raise ValueError(f"kl_warmup_epochs must be >= 0, got {kl_warmup_epochs}.")
        self.seed = seed
        #: Sample z by reparameterisation in training (set False for a deterministic
        #: autoencoder pass, e.g. to compare gradients exactly across devices).
        self.sample_latent = True
        self.components: dict[str, Component] = {}
        with seeded(seed):
            for i, name in enumerate(self.graph.order):
                self.components[name] = make_component(name, by_name, self.modality_specs, self.graph.parents(name),
                                                       None if seed is None else seed + i)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.kl_trackers = {c: keras.metrics.Mean(name=f"{c}_kl") for c in self.graph.order}
        self.nll_trackers = {
            m: keras.metrics.Mean(name=f"{m}_nll") for c in self.graph.order for m in self.graph.modalities(c)
        }
        # Codebook usage of quantised latents, per batch (VQ-VAE practice: a falling perplexity
        # means codes are dying).
        self.usage_trackers = {
            c: {k: keras.metrics.Mean(name=f"{c}_{k}") for k in ("perplexity", "codes_in_use")}
            for c in self.graph.order if self.components[c].posterior == "vq"
        }
        self._compile_kwargs: dict[str, Any] | None = None
        self._phase_optimizer: keras.optimizers.Optimizer | None = None  # the last phase's (stages.compile_phase)
        # Weight of the KL terms: ramped from 0 during pre-training and any KL warm-up, else 1.
        self.kl_weight = keras.Variable(1.0, trainable=False, dtype="float32", name="kl_weight")
        self._pretraining = False
        self._set_active(self.graph.order)
        self.built = True

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_data(cls, data: Any, components: Sequence[Mapping[str, Any]], **kwargs) -> CAVACHON:
        """Build a model whose modality specs (likelihood, sizes, batch encoding) come from ``data``.

        Encoders and decoders that set no ``units`` get widths scaled to the number of
        cells (:func:`~cavachon_like.model.specs.default_units`): 256-128 up to about
        32,000 cells, 512-256-128 above. ``conv1d`` modules that set no ``chromosome_sizes``
        get the bins per chromosome of genome-binned modalities (a ``chrom`` var column).
        """
        modalities = modality_specs_of(data, components)
        units = default_units(data.n_obs)
        components = [
            {
                **c,
                **({"representation": {"n_cells": data.n_obs, **(c.get("representation") or {})}}
                   if c.get("posterior") == "representation" else {}),
                "encoder": with_module_defaults(c.get("encoder"), mods, units, sizes, f"{where}: encoder"),
                "decoder": with_module_defaults(c.get("decoder"), mods, units[::-1], sizes, f"{where}: decoder"),
            }
            for c in components
            for mods in [[c["modalities"]] if isinstance(c["modalities"], str) else list(c["modalities"])]
            for sizes in [chromosome_sizes_of(data, mods)]
            for where in [f"component {c.get('name')!r}"]
        ]
        model = cls(modalities=modalities, components=components, **kwargs)
        for component in model.components.values():
            if component.posterior == "representation" and component.encoder.n_cells == data.n_obs:
                component.encoder.assign_cells(data.obs_names)
        return model

    # ------------------------------------------------------------------ forward pass
    @property
    def modality_names(self) -> list[str]:
        return [m for c in self.graph.order for m in self.graph.modalities(c)]

    @property
    def batch_categories(self) -> dict[str, dict[str, list[str]]]:
        """``{modality: {batch column: [category, ...]}}``: the batch encoding the model was built with."""
        return {m: dict(s["batch_categories"]) for m, s in self.modality_specs.items()}

    def call(
        self,
        inputs: Mapping[str, Mapping[str, tf.Tensor]],
        training: bool = False,
        sample: bool | None = None,
        components: Sequence[str] | None = None,
        decode: bool = True,
        noise: Mapping[str, tf.Tensor] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Run ``components`` (default all) and their ancestors in topological order.

        Ancestors are only encoded (their latents feed the requested components);
        the requested components are also decoded unless ``decode`` is False.
        ``noise`` maps component names to standard normal draws used when sampling.
        """
        sample = training if sample is None else sample
        requested = set(components or self.graph.order)
        outputs: dict[str, dict[str, Any]] = {}
        for name in self.graph.closure(requested):
            component = self.components[name]
            parents = [outputs[p][component.conditioned_on] for p in component.parents]
            outputs[name] = component(
                inputs["x"],
                inputs["batch"],
                parents,
                sample=sample,
                decode=decode and name in requested,
                noise=None if noise is None else noise.get(name),
                index=inputs.get("index", {}).get(name),
                latent=inputs.get("latent", {}).get(name),
                measured=inputs.get("measured"),
                moments=inputs.get("moments", {}).get(name),
            )
        return outputs

    # ------------------------------------------------------------------ training
    @property
    def training_components(self) -> list[str]:
        """Components the current (or last) training stage updates: callbacks tell stages apart by it."""
        return list(self._active)

    def _set_active(self, components: Sequence[str]) -> None:
        """Train ``components``; freeze the rest (ancestors and offspring alike)."""
        self._active = list(components)
        for name, component in self.components.items():
            # Through False: setting `trainable = True` on a layer that already is does not
            # reach its sublayers (a prior frozen for pre-training stayed frozen).
            component.trainable = False
            component.trainable = name in self._active

    def compile(self, optimizer: Any = None, loss: Any = None, jit_compile: bool | str = False, **kwargs) -> None:
        """Configure training; ``optimizer`` defaults to Adam with learning rate 1e-3
        (:class:`~cavachon_like.train.FusedAdam`: Keras' Adam update, fused per variable).

        The loss is the model's ELBO, so ``loss`` must stay ``None``. The optimizer is
        cloned afresh for every training stage. ``jit_compile`` defaults to False
        because XLA cannot compile the sparse-dense products of sparse inputs.

        Mixed precision (for GPUs): set the policy before building the model,
        ``keras.mixed_precision.set_global_policy("mixed_float16")``; Keras then wraps
        the optimizer for loss scaling. Likelihoods, priors and the sparse products
        stay in float32.
        """
        if loss is not None:
            raise ValueError("CAVACHON computes its own loss (the negative ELBO); do not pass `loss` to compile().")
        optimizer = keras.optimizers.get(optimizer or FusedAdam(learning_rate=1e-3))
        self._compile_kwargs = {"optimizer": keras.optimizers.serialize(optimizer), "jit_compile": jit_compile, **kwargs}
        super().compile(optimizer=optimizer, jit_compile=jit_compile, **kwargs)

    def get_compile_config(self) -> dict[str, Any] | None:
        return self._compile_kwargs

    def compile_from_config(self, config: dict[str, Any]) -> None:
        config = dict(config)
        config["optimizer"] = keras.optimizers.deserialize(config["optimizer"])
        self.compile(**config)

    def make_dataset(self, data: Any, batch_size: int = 256, shuffle: bool = False, seed: int | None = None,
                     indices: np.ndarray | None = None, order: tf.Variable | None = None,
                     training: bool = False, moments: Mapping[str, np.ndarray] | None = None) -> tf.data.Dataset:
        """A ``tf.data.Dataset`` of ``data`` encoded the way this model expects.

        Counts stay sparse per batch, except under a multi-replica strategy:
        tf.distribute cannot split ``SparseTensor`` batches across replicas, so
        there each batch (never the whole matrix) is densified in the pipeline.

        For components with learned representations (``posterior: representation``), the
        batches carry each cell's latent: its learned row for cells the model was trained
        on, a latent inferred against the frozen model for others (:meth:`predict_new`).
        With ``training`` they carry the rows themselves (``index``), which ``fit`` trains;
        every cell must then have one. Outside training, a modality missing from ``data`` that a
        component with experts or learned representations holds counts as measured in no cell
        (mosaic data), so such a latent is encoded from the modalities the data have. ``moments``
        (``{component: (n_obs, 2 d)}``, each cell's q(z|x) mean and variance side by side, e.g.
        :func:`~cavachon_like.model.stages.frozen_moments`) stand in for those components' encoders.
        """
        if not training:
            data = with_absent_modalities(self.components, self.modality_specs, data)
        self.check_data(data)
        return data.to_dataset(
            per_cell={**(per_cell_inputs(self, data, indices, training) or {}), **({"moments": moments} if moments else {})},
            batch_size=batch_size,
            shuffle=shuffle,
            seed=(self.seed or 0) if seed is None else seed,
            indices=indices,
            order=order,
            modalities=self.modality_names,
            batch_categories=self.batch_categories,
            sparse=self.distribute_strategy.num_replicas_in_sync == 1,
        )

    def predict_new(self, data: Any, modalities: Sequence[str] | None = None, components: Sequence[str] | None = None,
                    n_steps: int = DEFAULT_STEPS, learning_rate: float = DEFAULT_INFERENCE_RATE,
                    batch_size: int = 256, new_covariates: bool = False) -> dict[str, np.ndarray]:
        """Latents of cells the model was not trained on, for components without an encoder.

        Each cell's ``z_<component>`` (cells x d) maximises ``log p(x | z) + log p(z)`` with the
        model frozen (multiDGD): from the best prior mode, ``n_steps`` Adam steps. Only
        ``modalities`` (default: the component's that ``data`` has) enter ``p(x | z)``, so cells
        measured in one modality get a latent from which the others are decoded. With a
        covariate model also ``covariates_<component>``; cells of unseen batches are placed
        naively or, with ``new_covariates``, under a new component per batch
        (:func:`~cavachon_like.model.inference.infer_latents`). Nothing in the model changes.
        """
        names = components or [c for c, m in self.components.items() if m.posterior == "representation"]
        if not names:
            raise ValueError("every component of this model has an encoder; use get_latent_representation.")
        result = {}
        for name in names:
            if name not in self.components:
                raise KeyError(f"unknown component {name!r}; the model has {list(self.components)}.")
            mods = None if modalities is None else [m for m in modalities if m in self.graph.modalities(name)]
            full = infer_latents(self, data, name, modalities=mods, n_steps=n_steps, learning_rate=learning_rate,
                                 batch_size=batch_size, new_covariates=new_covariates)
            d = self.components[name].latent_dim
            result[f"z_{name}"] = full[:, :d]
            if self.components[name].covariates is not None:
                result[f"covariates_{name}"] = full[:, d:]
        return result

    def check_data(self, data: Any) -> None:
        """Raise a specific error if ``data`` does not fit this model (before any training)."""
        check_data(self.modality_specs, data, {m: self.modality_support(m) for m in self.modality_specs})
        check_measured(self.components, data)

    def fit(
        self,
        x: Any = None,
        y: Any = None,
        batch_size: int = 256,
        epochs: int = 1,
        verbose: Any = "auto",
        callbacks: Sequence[keras.callbacks.Callback] | None = None,
        validation_split: float = 0.0,
        validation_data: Any = None,
        shuffle: bool = True,
        checkpoint: str | Path | None = None,
        resume: bool = False,
        **kwargs,
    ) -> keras.callbacks.History:
        """Train the model: stage by stage in topological order (or jointly).

        ``x`` is a :class:`~cavachon_like.data.MultiModality` (datasets are built with
        the model's batch encoding; ``validation_split`` holds out a seeded fraction of
        cells) or a ``tf.data.Dataset`` from :meth:`make_dataset`. ``epochs`` is per
        stage and counts the ELBO epochs; a stage with a mixture prior first runs
        ``pretrain_epochs`` of pre-training, after which its mixture is fitted to the
        latents (see the class docstring). Callbacks see every stage, except that
        ``EarlyStopping`` only watches the ELBO epochs, whose best weights it may
        restore. The returned History has one row per epoch of every stage, with
        ``stage`` and ``phase`` (``"pretrain"`` or ``"elbo"``) columns.

        With ``checkpoint`` (a folder), the whole training state is written to
        ``checkpoint/checkpoint.npz`` after every epoch; ``resume=True`` continues from
        that file if it exists (a killed run loses at most the epoch in progress) and
        ends with the weights an uninterrupted run would have, given the same seed,
        data and arguments, which the checkpoint checks. Exact continuation needs a
        :class:`~cavachon_like.data.MultiModality` as ``x``: for a ``tf.data.Dataset``
        the cell order after resuming is the dataset's.
        """
        if y is not None:
            raise ValueError("CAVACHON is unsupervised; pass only `x`.")
        self.history = fit_model(self, x, batch_size=batch_size, epochs=epochs, verbose=verbose,
                                 callbacks=list(callbacks or []), validation_split=validation_split,
                                 validation_data=validation_data, shuffle=shuffle, checkpoint=checkpoint,
                                 resume=resume, **kwargs)
        return self.history

    def adapt(self, data: Any, only_new: bool = False) -> None:
        """Set the preprocessors' data statistics (e.g. TF-IDF weights) from ``data``.

        ``fit`` calls this for a :class:`~cavachon_like.data.MultiModality`; call it
        yourself before fitting on a ``tf.data.Dataset``. With ``only_new``, layers that
        already have statistics (a trained or reloaded model) keep them.
        """
        for component in self.components.values():
            for m, preprocessor in component.preprocessors.items():
                if preprocessor.needs_adapt and not (only_new and preprocessor.is_adapted):
                    preprocessor.adapt(data.mod[m].X)

    # ------------------------------------------------------------------ outputs
    # The public interface (see MultimodalModel for the contracts).
    @property
    def latent_names(self) -> list[str]:
        return list(self.graph.order)

    def latent_modalities(self, latent: str) -> list[str]:
        return self.graph.modalities(latent)

    def batch_keys(self, modality: str) -> list[str]:
        return list(self.modality_specs[modality]["batch_key"])

    def modality_support(self, modality: str) -> str:
        return self.components[self.graph.component_of(modality)].likelihoods[modality].support

    @property
    def attributable_latents(self) -> list[str]:
        return [c for c in self.graph.order if self.graph.parents(c)]

    def get_latent_representation(self, data: Any, batch_size: int = 1024) -> dict[str, np.ndarray]:
        """Posterior means per component: ``z_<c>``, ``z_hat_<c>``, ``cluster_probabilities_<c>``
        (mixture priors) and ``code_<c>`` (quantised latents)."""
        dataset = self.make_dataset(data, batch_size=batch_size, shuffle=False)
        return {k: np.asarray(v) for k, v in self.predict(dataset, verbose=0).items()}

    def get_normalized_expression(self, data: Any, modality: str, **kwargs: Any) -> np.ndarray:
        """Decoded means through the DAG: see :meth:`MultimodalModel.get_normalized_expression`."""
        return normalized_expression(self, data, modality, **kwargs)

    def posterior_predictive_sample(self, data: Any, modality: str, **kwargs: Any) -> np.ndarray:
        """See :meth:`MultimodalModel.posterior_predictive_sample`."""
        return predictive_sample(self, data, modality, **kwargs)

    def predict_modality(self, data: Any, target: str, **kwargs: Any) -> np.ndarray:
        """Through the DAG, from ``target``'s ancestors: see :mod:`cavachon_like.model.prediction`.
        A component without an encoder infers its latent from its other modalities instead."""
        component = self.graph.component_of(target) if target in self.modality_names else None
        if component is not None and self.components[component].posterior == "representation":
            return predict_from_representation(self, data, target, **kwargs)
        return predict_modality(self, data, target, **kwargs)

    def silencing_effects(self, data: Any, genes: Sequence[str], source: str, target: str,
                          **kwargs: Any) -> pd.DataFrame:
        """Predicted change of every ``target`` feature when each of ``genes`` (of ``source``) is
        silenced: one latent step towards the silenced profile (multiDGD's in-silico perturbation);
        see :func:`cavachon_like.model.perturbation.silencing_effects` for the options."""
        return silencing_effects(self, data, genes, source, target, **kwargs)

    def map_query(self, query: Any, reference: Any = None, label_key: str | None = None, **kwargs: Any) -> Any:
        """Add the query's new batch categories and train only their weights (scArches' surgery), then
        the query's latents, clusters and kNN label transfer from ``reference``: see
        :meth:`MultimodalModel.map_query` and, for the training options, :func:`cavachon_like.model.query.map_query`.
        Returns a :class:`~cavachon_like.model.QueryMapping`; this model is not modified."""
        from .query import map_query

        return map_query(self, query, reference, label_key, **kwargs)

    def marginal_log_likelihood(self, data: Any, **kwargs: Any) -> np.ndarray:
        """See :mod:`cavachon_like.model.marginal`."""
        return marginal_log_likelihood(self, data, **kwargs)

    def latent_traversal(self, data: Any, latent: str, **kwargs: Any) -> LatentTraversal:
        """Pseudocells along each dimension of ``latent``, its parents at their population mean: see
        :mod:`cavachon_like.model.traversal`."""
        return latent_traversal(self, data, latent, **kwargs)

    def conditional_attribution(self, data: Any, latent: str, **kwargs: Any) -> pd.DataFrame | dict[str, pd.DataFrame]:
        """Integrated-gradient attribution of ``latent`` beyond its parents (paper Eq. S6): see
        :func:`cavachon_like.model.attribution.conditional_attribution`."""
        if latent not in self.components:
            raise KeyError(f"unknown component {latent!r}; the model has {list(self.components)}.")
        if latent not in self.attributable_latents:
            raise ValueError(f"component {latent!r} has no parents, so nothing conditions it; components with "
                             f"parents: {self.attributable_latents}.")
        return conditional_attribution(self, data, latent, **kwargs)

    # ------------------------------------------------------------------ serialization
    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "modalities": self.modality_specs,
            "components": self.component_specs,
            "training": self.training_mode,
            "progressive_epochs": self.progressive_epochs,
            "pretrain_epochs": self.pretrain_epochs,
            "prior_em_iterations": self.prior_em_iterations,
            "kl_warmup_epochs": self.kl_warmup_epochs,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CAVACHON:
        return cls(**config)
