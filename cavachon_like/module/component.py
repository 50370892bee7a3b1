"""A component: one latent variable z with the modules around it (paper Fig. S2)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf

from ..distributions import PRIORS, StandardNormalPrior, get_likelihood
from ..nn import (
    as_dense,
    DECODERS,
    ENCODERS,
    HIERARCHICAL_ENCODERS,
    PREPROCESSORS,
    CovariateModel,
    MixtureOfExperts,
    ProductOfExperts,
    LearnedRepresentation,
    QuantizedExperts,
    library_size,
)
from .options import EXPERT_NAMES, check_options
from .spec import build_from_spec, per_modality
from .stratified import stratified_pass, stratified_terms
from .terms import check_sampled_zeros, expert_divergence, sampled_reconstruction

DEFAULT_LATENT_DIM = 20
#: Posteriors that are one Gaussian per cell, so that precomputed moments can stand in for the encoder.
CACHEABLE_POSTERIORS = ("concat", "poe")
#: The posteriors built from one encoder (expert) per modality, by name.
EXPERT_POSTERIORS = dict(zip(EXPERT_NAMES, (ProductOfExperts, MixtureOfExperts, QuantizedExperts), strict=True))


@keras.saving.register_keras_serializable(package="cavachon_like")
class Component(keras.layers.Layer):
    """One latent variable and its modules: preprocessors, encoder, hierarchical
    encoder, prior, and one decoder per modality.

    A component may hold several modalities, which then share one latent space
    (a joint component, paper Fig. 1a). Its parents' latents enter through the
    hierarchical encoder (Eq. 2): their ``z_hat`` (default, i.e. conditioning on all
    ancestors) or their ``z`` (``conditioned_on="z"``, Appendix C).

    Like any Keras layer it builds on its first call, or explicitly with
    ``build(**component.build_shapes())``, which is what the model does.

    Parameters
    ----------
    modalities
        ``{modality: {"likelihood": alias or config, "n_features": int, "n_batch": int}}``.
    latent_dim
        Dimension of z (20 in the paper).
    parents
        Names of parent components, in the order their latents are concatenated.
    parent_dims
        Latent dimension of each parent.
    conditioned_on
        ``"z_hat"`` or ``"z"``: which latent of the parents this component uses.
    posterior
        How q(z|x) combines several modalities: ``"concat"`` (the paper: one encoder
        over all of them) or ``"poe"`` (one encoder per modality, multiplied with a
        N(0, I) prior expert, :class:`~cavachon_like.nn.ProductOfExperts`; defined for
        any subset of the modalities, so one predicts the others) or ``"moe"`` (the
        same experts mixed with equal weights, :class:`~cavachon_like.nn.MixtureOfExperts`,
        trained with scMM's stratified ELBO: one sample per expert decodes every
        modality, so each modality learns to reconstruct the others) or ``"vq"`` (CVQVAE:
        the experts' outputs quantised on one shared codebook,
        :class:`~cavachon_like.nn.QuantizedExperts`; every expert's code decodes every
        modality, and the KL term is replaced by the commitment and alignment losses)
        or ``"representation"`` (multiDGD: no encoder; each cell's z is a learned row of
        :class:`~cavachon_like.nn.LearnedRepresentation`, trained by maximum a posteriori,
        so the ``kl`` term is ``-log p(z)``). The encoder spec applies to every expert, or
        gives one per modality when keyed by modality names (``{"rna": {"units": [500,
        500]}, "atac": {"units": [100, 100]}}``, scMM's widths).
    quantizer
        Options of :class:`~cavachon_like.nn.QuantizedExperts` for ``posterior="vq"``
        (``n_codes``, ``decay``, ``beta``, ``restart_below``, ``alignment``).
    representation
        Options of :class:`~cavachon_like.nn.LearnedRepresentation` for
        ``posterior="representation"``: ``n_cells`` (required; ``CAVACHON.from_data``
        fills it in), ``learning_rate``, ``beta_1``, ``beta_2``, and ``covariate_dim``
        (multiDGD's covariate model, :class:`~cavachon_like.nn.CovariateModel`: each batch
        column gets a per-cell representation of this dimension with a supervised mixture
        prior, read by the decoders instead of the batch one-hot; 0, the default, keeps the
        one-hot). The modality specs then need ``batch_columns`` (``{column: n_categories}``).
    expert_alignment
        For ``poe``/``moe``: weight of a penalty, added to the ``kl`` term, on the symmetric
        KL divergence between the experts of each pair of modalities a cell has (MultiVI's
        alignment of its modality-specific posteriors), so that a cell measured in one
        modality lands where a paired cell would (mosaic data). 0 (default): the paper's ELBO.
    sampled_zeros
        For likelihoods whose log-probability splits into terms of the non-zeros and a sum over
        all features (``bernoulli``): in training steps, the sum is estimated from this fraction
        of the features, drawn uniformly per step and reweighted (unbiased), the non-zeros' terms
        stay exact, so the decoder's last layer runs on the sample rather than on every feature
        (:func:`~cavachon_like.module.terms.sampled_reconstruction`). Validation and every
        analysis use the exact likelihood. ``None`` (default): exact in training too.
    prior
        Prior spec, default the learnable Gaussian mixture with K = 2 * latent_dim + 1.
    encoder, decoder, hierarchical_encoder, preprocessor
        Module specs: an alias or ``{"class": alias, **kwargs}``. The decoder and
        preprocessor specs apply to every modality of the component, or, keyed by modality
        names, give each its own (as the encoder spec does for experts; see ``posterior``);
        a preprocessor transforms as its modality's likelihood asks unless it sets
        ``transform``, e.g. ``{atac: {transform: tfidf}}``.
    seed
        Seed of the reparameterisation noise.
    """

    def __init__(
        self,
        modalities: Mapping[str, Mapping[str, Any]],
        latent_dim: int = DEFAULT_LATENT_DIM,
        parents: Sequence[str] = (),
        parent_dims: Sequence[int] = (),
        conditioned_on: str = "z_hat",
        posterior: str = "concat",
        prior: str | dict | None = None,
        encoder: str | dict | None = None,
        decoder: str | dict | None = None,
        hierarchical_encoder: str | dict | None = None,
        preprocessor: str | dict | None = None,
        quantizer: Mapping[str, Any] | None = None,
        representation: Mapping[str, Any] | None = None,
        expert_alignment: float = 0.0,
        sampled_zeros: float | None = None,
        seed: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_options(self.name, modalities=list(modalities), posterior=posterior, conditioned_on=conditioned_on,
                      parents=parents, parent_dims=parent_dims, encoder=encoder, quantizer=quantizer,
                      representation=representation, expert_alignment=expert_alignment)
        self.modality_specs = {m: dict(spec) for m, spec in modalities.items()}
        self.likelihoods = {m: get_likelihood(spec["likelihood"]) for m, spec in self.modality_specs.items()}
        self.latent_dim = int(latent_dim)
        self.parents = list(parents)
        self.parent_dims = [int(d) for d in parent_dims]
        self.conditioned_on = conditioned_on
        self.posterior = posterior
        self.specs = {
            "prior": prior,
            "encoder": encoder,
            "decoder": decoder,
            "hierarchical_encoder": hierarchical_encoder,
            "preprocessor": preprocessor,
        }
        self.quantizer = dict(quantizer or {})
        self.representation = dict(representation or {})
        self.expert_alignment = float(expert_alignment)
        self.seed = seed
        preprocessors = (per_modality(preprocessor, list(self.likelihoods), f"component {self.name!r}: preprocessor")
                         or dict.fromkeys(self.likelihoods, preprocessor))
        self.preprocessors = {  # the likelihood's input transform unless the spec names another
            m: build_from_spec(PREPROCESSORS, preprocessors[m], "default", defaults={"transform": lik.input_transform},
                               name=f"preprocessor_{m}")
            for m, lik in self.likelihoods.items()
        }
        self.covariates = self._covariate_model()
        mods = list(self.modality_specs)
        encoders = per_modality(encoder, mods, f"component {self.name!r}: encoder") or dict.fromkeys(mods, encoder)
        decoders = per_modality(decoder, mods, f"component {self.name!r}: decoder") or dict.fromkeys(mods, decoder)
        if posterior == "representation":
            table = {k: v for k, v in self.representation.items() if k != "covariate_dim"}
            width = self.latent_dim + (self.covariates.width if self.covariates else 0)
            self.encoder = LearnedRepresentation(latent_dim=width, **table, name="encoder")
        elif posterior in EXPERT_POSTERIORS:
            options = {"seed": seed, **self.quantizer} if posterior == "vq" else {}
            self.encoder = EXPERT_POSTERIORS[posterior](
                [build_from_spec(ENCODERS, encoders[m], "mlp", latent_dim=self.latent_dim, name=f"expert_{m}")
                 for m in mods],
                name="encoder",
                **options,
            )
        else:
            self.encoder = build_from_spec(ENCODERS, encoder, "mlp", latent_dim=self.latent_dim, name="encoder")
        self.hierarchical_encoder = build_from_spec(
            HIERARCHICAL_ENCODERS, hierarchical_encoder, "linear", latent_dim=self.latent_dim, name="hierarchical_encoder"
        )
        self.prior = build_from_spec(PRIORS, prior, "mixture_gaussian", latent_dim=self.latent_dim, name="prior")
        self.decoders = {
            m: build_from_spec(
                DECODERS,
                decoders[m],
                "mlp",
                n_features=spec["n_features"],
                parameters=self.likelihoods[m].parameters,
                name=f"decoder_{m}",
            )
            for m, spec in self.modality_specs.items()
        }
        self.sampled_zeros = check_sampled_zeros(self.name, sampled_zeros, posterior, self.likelihoods, self.decoders)
        # The KL of the pre-training phase (fit): no weights, so nothing to save.
        self.pretrain_prior = StandardNormalPrior(self.latent_dim, name="pretrain_prior")
        self.noise = keras.random.SeedGenerator(seed)

    def _covariate_model(self) -> CovariateModel | None:
        """The covariate model over the batch columns of every modality (``covariate_dim``), or None."""
        dim = int(self.representation.get("covariate_dim") or 0)
        if not dim:
            return None
        layouts = {m: dict(spec.get("batch_columns") or {}) for m, spec in self.modality_specs.items()}
        return CovariateModel(layouts, dim=dim, n_cells=self.representation["n_cells"], name="covariates")

    def decode(self, modality: str, z_hat: tf.Tensor, batch: tf.Tensor,
               covariates: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """The raw likelihood parameters of ``modality`` from ``z_hat`` (B, d) and its batch one-hot
        (B, n_batch); with a covariate model, from the covariate representations instead
        (:meth:`~cavachon_like.nn.CovariateModel.condition`: the cells' own ``covariates``, when given)."""
        if self.covariates is not None:
            batch = tf.cast(self.covariates.condition(modality, batch, covariates), z_hat.dtype)
        return self.decoders[modality](z_hat, batch)

    @property
    def modalities(self) -> list[str]:
        """The component's modalities, in the order of its specs (and of its experts)."""
        return list(self.modality_specs)

    @property
    def has_experts(self) -> bool:
        """Whether q(z|x) is built from one encoder per modality (defined for any subset of them)."""
        return self.posterior in EXPERT_POSTERIORS

    @property
    def takes_subsets(self) -> bool:
        """Whether q(z|x) is defined for any subset of the modalities (experts, or learned rows
        that only the decoders see): cells lacking a modality (mosaic data) are then encoded."""
        return self.has_experts or self.posterior == "representation"

    @property
    def takes_moments(self) -> bool:
        """Whether q(z|x) is one Gaussian per cell, so that its moments, computed beforehand, can
        stand in for the encoder (``moments`` of :meth:`call`)."""
        return self.posterior in CACHEABLE_POSTERIORS

    @property
    def n_codes(self) -> int | None:
        """The codebook size of a quantised latent (``posterior="vq"``), else None."""
        return self.encoder.quantizer.n_codes if self.posterior == "vq" else None

    def build_shapes(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`build` that the modality specs and parents imply.

        The model builds each component with them as it creates it, so that a new model
        has all its weights (for loading a ``.keras`` file and for ``summary``).
        """
        return {
            "x_shape": {m: (None, int(s["n_features"])) for m, s in self.modality_specs.items()},
            "batch_shape": {m: (None, int(s["n_batch"])) for m, s in self.modality_specs.items()},
            "parents_shape": [(None, d) for d in self.parent_dims],
        }

    def build(
        self,
        x_shape: Mapping[str, Sequence[int | None]],
        batch_shape: Mapping[str, Sequence[int | None]],
        parents_shape: Sequence[Sequence[int | None]] = (),
    ) -> None:
        """Build every module from the shapes of :meth:`call`'s arguments.

        Parameters
        ----------
        x_shape, batch_shape
            ``{modality: (B, n_features)}`` and ``{modality: (B, n_batch)}``; they may
            hold other modalities too (the model passes all of its inputs).
        parents_shape
            One ``(B, d)`` shape per parent, in the order of ``parents``.
        """
        for m, spec in self.modality_specs.items():
            # The decoders' output width comes from the specs, so the input must agree.
            if x_shape[m][-1] != spec["n_features"]:
                raise ValueError(f"component {self.name!r}: modality {m!r} has {spec['n_features']} features "
                                 f"in its spec but the input has shape {tuple(x_shape[m])}.")
        parent_dims = [int(shape[-1]) for shape in parents_shape]
        if parent_dims != self.parent_dims:
            raise ValueError(f"component {self.name!r}: parents {self.parents} have latent dims {self.parent_dims} "
                             f"but the parent inputs have {parent_dims}.")
        mods = self.modalities
        all_batch = (None, sum(int(batch_shape[m][-1]) for m in mods))
        latent = (None, self.latent_dim)
        for m in mods:
            self.preprocessors[m].build(x_shape[m])
        if self.posterior == "representation":
            self.encoder.build((None,))
        elif self.has_experts:
            self.encoder.build([x_shape[m] for m in mods], [batch_shape[m] for m in mods])
        else:
            self.encoder.build([x_shape[m] for m in mods], all_batch)
        self.hierarchical_encoder.build(latent, list(parents_shape))
        self.prior.build(latent)
        self.pretrain_prior.build(latent)
        if self.covariates is not None:
            self.covariates.build()
        for m in mods:
            condition = batch_shape[m] if self.covariates is None else (None, self.covariates.condition_width(m))
            self.decoders[m].build(latent, condition)

    def call(
        self,
        x: Mapping[str, tf.Tensor | tf.SparseTensor],
        batch: Mapping[str, tf.Tensor],
        parents: Sequence[tf.Tensor] = (),
        sample: bool = False,
        decode: bool = True,
        noise: tf.Tensor | None = None,
        training: bool | None = None,
        index: tf.Tensor | None = None,
        latent: tf.Tensor | None = None,
        measured: Mapping[str, tf.Tensor] | None = None,
        moments: tf.Tensor | None = None,
    ) -> dict[str, Any]:
        """Encode, sample (when ``sample``), incorporate parents and (when ``decode``) decode.

        ``noise`` (standard normal, (B, d)) replaces the layer's own draws when
        sampling, so that analyses can draw reproducible posterior samples. With
        ``posterior="vq"``, ``z`` is the code of the experts' mean (``z_mean``), and
        ``training`` (which Keras passes down from the model) moves the codebook. With
        ``posterior="representation"``, ``z`` is ``latent`` (B, d) when given, else the
        learned rows ``index`` (B,) of the cells. ``measured`` (``{modality: (B,)}`` 0/1, from
        mosaic data's batches) leaves the experts of the modalities a cell lacks out of its
        posterior (``poe``, ``moe``, ``vq``) and, returned as ``measured``, the modalities out
        of :meth:`loss_terms`. ``moments`` (B, 2d), the cells' q(z|x) mean and variance side by
        side, computed beforehand, replaces the encoder (a frozen ancestor's posterior does not
        change while its descendants train; ``concat`` and ``poe`` posteriors).

        Returns a dict with ``z_mean``, ``z_var``, ``z``, ``z_hat`` (each (B, d)), with
        ``posterior="vq"`` also ``codes`` (B,) (each cell's codebook index; per expert
        sample, (M * B,), when sampling), and, when decoding, ``raw``
        (``{modality: {parameter: (B, F)}}``) and ``library_size``.
        """
        mods = self.modalities
        sizes = {m: library_size(x[m]) for m in mods}
        flags = None if measured is None else {m: tf.cast(measured[m], tf.float32) for m in mods}
        if self.posterior == "representation":
            outputs = self._represented(x, batch, parents, sizes, decode, index, latent)
        else:
            outputs = self._encoded(x, batch, parents, sizes, sample, decode, noise, training, flags, moments)
        if flags is not None:
            outputs["measured"] = flags
        return outputs

    def _encoded(self, x: Mapping[str, Any], batch: Mapping[str, tf.Tensor], parents: Sequence[tf.Tensor],
                 sizes: Mapping[str, tf.Tensor], sample: bool, decode: bool, noise: tf.Tensor | None,
                 training: bool | None, flags: Mapping[str, tf.Tensor] | None,
                 cached: tf.Tensor | None = None) -> dict[str, Any]:
        """The pass of a component with an encoder (see :meth:`call`; ``cached`` is its ``moments``)."""
        mods = self.modalities
        present = None if flags is None else [flags[m] for m in mods]
        expert_moments = None
        if cached is not None:
            if not self.takes_moments:
                raise ValueError(f"component {self.name!r}: a {self.posterior!r} posterior cannot be given as moments; "
                                 f"only {CACHEABLE_POSTERIORS} posteriors are one Gaussian per cell.")
            z_mean, z_var = tf.split(tf.cast(cached, self.compute_dtype), 2, axis=-1)
        else:
            encoded = [self.preprocessors[m](x[m], sizes[m]) for m in mods]
            if self.posterior in ("moe", "vq") and sample and noise is None:
                return stratified_pass(self, batch, parents, encoded, sizes, decode,
                                       bool(training) and self.trainable, present)
            if self.has_experts and self.expert_alignment:  # the penalty needs each expert's posterior
                means, variances = self.encoder.experts_of(encoded, [batch[m] for m in mods])
                z_mean, z_var = self.encoder.combine(means, variances, present)
                expert_moments = {"mean": tf.stack(means), "var": tf.stack(variances)}
                if present is not None:
                    expert_moments["present"] = tf.stack(present)
            elif self.has_experts:
                z_mean, z_var = self.encoder(encoded, [batch[m] for m in mods], present)
            else:
                z_mean, z_var = self.encoder(encoded, tf.concat([batch[m] for m in mods], axis=-1))
        codes = None
        if self.posterior == "vq":
            z, codes = self.encoder.quantized(z_mean)[:2]
        elif sample:
            if noise is None:
                noise = keras.random.normal(tf.shape(z_mean), seed=self.noise)
            z = z_mean + tf.sqrt(z_var) * tf.cast(noise, z_mean.dtype)
        else:
            z = z_mean
        z_hat = self.hierarchical_encoder(z, parents)
        outputs = {"z_mean": z_mean, "z_var": z_var, "z": z, "z_hat": z_hat}
        if expert_moments is not None:
            outputs["expert_moments"] = expert_moments
        if codes is not None:
            outputs["codes"] = codes
        if decode:
            sampled = mods if self.sampled_zeros and training else []
            outputs["raw"] = {m: self.decoders[m](z_hat, batch[m]) for m in mods if m not in sampled}
            outputs["library_size"] = sizes
            if sampled:
                outputs["sampled"] = {m: sampled_reconstruction(self.likelihoods[m], self.decoders[m], x[m], z_hat,
                                                                batch[m], self.sampled_zeros, self.noise)
                                      for m in sampled}
        return outputs

    def _represented(self, x: Mapping[str, Any], batch: Mapping[str, tf.Tensor], parents: Sequence[tf.Tensor],
                     sizes: Mapping[str, tf.Tensor], decode: bool, index: tf.Tensor | None,
                     latent: tf.Tensor | None) -> dict[str, Any]:
        """The pass of a learned representation: z is the cells' rows (or ``latent``), a point, no noise."""
        if latent is None and index is None:
            raise ValueError(f"component {self.name!r} learns one latent per cell (posterior: representation), so it "
                             "needs each cell's row (`index`) or latent: build the batches with the model's "
                             "make_dataset, which infers the latents of new cells (predict_new).")
        full = tf.cast(latent, self.compute_dtype) if latent is not None else self.encoder(index)
        z, covariates = full[:, :self.latent_dim], None
        z_hat = self.hierarchical_encoder(z, parents)
        outputs = {"z_mean": z, "z_var": tf.zeros_like(z), "z": z, "z_hat": z_hat}
        if self.covariates is not None:
            covariates = full[:, self.latent_dim:]
            outputs["covariates"] = covariates
            outputs["covariate_log_prob"] = (self.covariates.log_prob(covariates, self.covariates.codes(batch))
                                             + self.covariates.parameter_log_prior() / self.covariates.n_cells)
        if decode:
            outputs["raw"] = {m: self.decode(m, z_hat, batch[m], covariates) for m in self.modalities}
            outputs["library_size"] = sizes
        return outputs

    def parameters_of(self, outputs: Mapping[str, Any]) -> dict[str, dict[str, tf.Tensor]]:
        """Constrained likelihood parameters for each modality."""
        return {m: self.likelihoods[m].constrain(raw, outputs["library_size"][m]) for m, raw in outputs["raw"].items()}

    def loss_terms(
        self, x: Mapping[str, tf.Tensor | tf.SparseTensor], outputs: Mapping[str, Any], pretrain: bool = False
    ) -> dict[str, Any]:
        """Per-cell negative ELBO terms: ``{"kl": (B,), "nll": {modality: (B,)}}``.

        ``kl`` is E_q(c|x)[KL(q(z|x) || p(z|c))] + KL(q(c|x) || p(c)) with the
        optimal q(c|x) of Eq. S5 for the mixture prior (Appendix A, B); with
        ``pretrain`` it is the KL to a standard normal instead, as in VaDE's
        pre-training before the mixture is fitted to the latents. Counts are
        densified here, one batch at a time, because every entry (zeros included)
        enters the likelihood, unless the likelihood takes sparse input itself
        (``accepts_sparse``, e.g. Bernoulli).
        """
        params = self.parameters_of(outputs)
        prior = self.pretrain_prior if pretrain else self.prior
        flags = outputs.get("measured")
        if "experts" in outputs:
            terms = stratified_terms(self.likelihoods, x, outputs["experts"], params, prior)
        else:
            if self.posterior == "representation":  # a point estimate (MAP): its prior term is -log p(z)
                kl = -prior.log_prob(tf.cast(outputs["z"], tf.float32)) - outputs.get("covariate_log_prob", 0.0)
            else:
                kl, _ = prior.kl_divergence(outputs["z_mean"], outputs["z_var"], outputs["z"])
                if flags is not None:  # a cell none of whose modalities is measured has no posterior here
                    kl = kl * tf.reduce_max(tf.stack([flags[m] for m in self.modalities]), axis=0)
            nll = {m: -(self.likelihoods[m].sampled_log_prob(outputs["sampled"][m]) if m not in params else
                        self.likelihoods[m].log_prob(x[m] if self.likelihoods[m].accepts_sparse else as_dense(x[m]),
                                                     params[m]))
                   for m in self.modalities}
            terms = {"kl": kl, "nll": nll}
        if flags is not None:  # an unmeasured modality's empty row is not data
            terms["nll"] = {m: v * tf.cast(flags[m], v.dtype) for m, v in terms["nll"].items()}
        moments = outputs.get("expert_moments", outputs.get("experts"))
        if self.expert_alignment and moments is not None:
            terms["kl"] = terms["kl"] + self.expert_alignment * expert_divergence(moments)
        return terms

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "modalities": self.modality_specs,
            "latent_dim": self.latent_dim,
            "parents": self.parents,
            "parent_dims": self.parent_dims,
            "conditioned_on": self.conditioned_on,
            "posterior": self.posterior,
            **self.specs,
            "quantizer": self.quantizer,
            "representation": self.representation,
            "expert_alignment": self.expert_alignment,
            "sampled_zeros": self.sampled_zeros,
            "seed": self.seed,
        }
