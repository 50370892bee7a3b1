"""A component: one latent variable z with the modules around it (paper Fig. S2)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf

from ..distributions import PRIORS, StandardNormalPrior, get_likelihood
from ..nn import (
    DECODERS,
    ENCODERS,
    HIERARCHICAL_ENCODERS,
    PREPROCESSORS,
    ProductOfExperts,
    library_size,
)
from .spec import build_from_spec

DEFAULT_LATENT_DIM = 20
#: How q(z|x) combines a component's modalities (see the ``posterior`` parameter).
POSTERIORS = ("concat", "poe")


def _dense(x: tf.Tensor | tf.SparseTensor) -> tf.Tensor:
    return tf.sparse.to_dense(x) if isinstance(x, tf.SparseTensor) else x


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
        any subset of the modalities, so one predicts the others). The encoder spec
        applies to every expert.
    prior
        Prior spec, default the learnable Gaussian mixture with K = 2 * latent_dim + 1.
    encoder, decoder, hierarchical_encoder, preprocessor
        Module specs: an alias or ``{"class": alias, **kwargs}``. The decoder spec
        applies to every modality of the component.
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
        seed: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if conditioned_on not in ("z_hat", "z"):
            raise ValueError(f"component {self.name!r}: conditioned_on must be 'z_hat' or 'z', got {conditioned_on!r}.")
        if posterior not in POSTERIORS:
            raise ValueError(f"component {self.name!r}: posterior must be one of {POSTERIORS}, got {posterior!r}.")
        if len(parents) != len(parent_dims):
            raise ValueError(f"component {self.name!r}: {len(parents)} parents but {len(parent_dims)} parent_dims.")
        self.modality_specs = {m: dict(spec) for m, spec in modalities.items()}
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
        self.seed = seed
        self.likelihoods = {m: get_likelihood(spec["likelihood"]) for m, spec in self.modality_specs.items()}
        self.preprocessors = {
            m: build_from_spec(
                PREPROCESSORS, preprocessor, "default", transform=lik.input_transform, name=f"preprocessor_{m}"
            )
            for m, lik in self.likelihoods.items()
        }
        if posterior == "poe":
            self.encoder = ProductOfExperts(
                [build_from_spec(ENCODERS, encoder, "mlp", latent_dim=self.latent_dim, name=f"expert_{m}")
                 for m in self.modality_specs],
                name="encoder",
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
                decoder,
                "mlp",
                n_features=spec["n_features"],
                parameters=self.likelihoods[m].parameters,
                name=f"decoder_{m}",
            )
            for m, spec in self.modality_specs.items()
        }
        # The KL of the pre-training phase (fit): no weights, so nothing to save.
        self.pretrain_prior = StandardNormalPrior(self.latent_dim, name="pretrain_prior")
        self.noise = keras.random.SeedGenerator(seed)

    @property
    def modalities(self) -> list[str]:
        return list(self.modality_specs)

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
        if self.posterior == "poe":
            self.encoder.build([x_shape[m] for m in mods], [batch_shape[m] for m in mods])
        else:
            self.encoder.build([x_shape[m] for m in mods], all_batch)
        self.hierarchical_encoder.build(latent, list(parents_shape))
        self.prior.build(latent)
        for m in mods:
            self.decoders[m].build(latent, batch_shape[m])

    def call(
        self,
        x: Mapping[str, tf.Tensor | tf.SparseTensor],
        batch: Mapping[str, tf.Tensor],
        parents: Sequence[tf.Tensor] = (),
        sample: bool = False,
        decode: bool = True,
        noise: tf.Tensor | None = None,
    ) -> dict[str, Any]:
        """Encode, sample (when ``sample``), incorporate parents and (when ``decode``) decode.

        ``noise`` (standard normal, (B, d)) replaces the layer's own draws when
        sampling, so that analyses can draw reproducible posterior samples.

        Returns a dict with ``z_mean``, ``z_var``, ``z``, ``z_hat`` (each (B, d)) and,
        when decoding, ``raw`` (``{modality: {parameter: (B, F)}}``) and ``library_size``.
        """
        mods = self.modalities
        sizes = {m: library_size(x[m]) for m in mods}
        encoded = [self.preprocessors[m](x[m], sizes[m]) for m in mods]
        if self.posterior == "poe":
            z_mean, z_var = self.encoder(encoded, [batch[m] for m in mods])
        else:
            z_mean, z_var = self.encoder(encoded, tf.concat([batch[m] for m in mods], axis=-1))
        if sample:
            if noise is None:
                noise = keras.random.normal(tf.shape(z_mean), seed=self.noise)
            z = z_mean + tf.sqrt(z_var) * tf.cast(noise, z_mean.dtype)
        else:
            z = z_mean
        z_hat = self.hierarchical_encoder(z, parents)
        outputs = {"z_mean": z_mean, "z_var": z_var, "z": z, "z_hat": z_hat}
        if decode:
            outputs["raw"] = {m: self.decoders[m](z_hat, batch[m]) for m in mods}
            outputs["library_size"] = sizes
        return outputs

    def parameters_of(self, outputs: Mapping[str, Any]) -> dict[str, dict[str, tf.Tensor]]:
        """Constrained likelihood parameters for each modality."""
        return {
            m: self.likelihoods[m].constrain(outputs["raw"][m], outputs["library_size"][m]) for m in self.modalities
        }

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
        kl, _ = prior.kl_divergence(outputs["z_mean"], outputs["z_var"], outputs["z"])
        nll = {
            m: -self.likelihoods[m].log_prob(x[m] if self.likelihoods[m].accepts_sparse else _dense(x[m]), params[m])
            for m in self.modalities
        }
        return {"kl": kl, "nll": nll}

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
            "seed": self.seed,
        }
