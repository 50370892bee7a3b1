"""scMM's stratified ELBO (paper 003 Eq. 2) and CVQVAE's cross-training (paper 002): the training
pass of a component whose experts each decode every modality, and its per-cell terms."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf

from ..nn import as_dense, log_mixture_density


def present_mean(values: tf.Tensor, present: Sequence[tf.Tensor] | None) -> tf.Tensor:
    """The mean over experts of ``values`` (M, B), per cell over the experts it has (0 with none)."""
    if present is None:
        return tf.reduce_mean(values, axis=0)
    mask = tf.cast(tf.stack(present), values.dtype)
    # where, not a product: an absent expert's value may be -inf or NaN-producing
    total = tf.reduce_sum(tf.where(mask > 0, values, tf.zeros_like(values)), axis=0)
    return total / tf.maximum(tf.reduce_sum(mask, axis=0), 1.0)


def stratified_pass(component: Any, batch: Mapping[str, tf.Tensor], parents: Sequence[tf.Tensor],
                    encoded: list[tf.Tensor], sizes: Mapping[str, tf.Tensor], decode: bool,
                    update: bool = False, present: Sequence[tf.Tensor] | None = None) -> dict[str, Any]:
    """The training pass of ``component``'s mixture of experts (``posterior`` ``moe`` or ``vq``):
    one sample per expert (stratified sampling, paper 003 Eq. 2), each decoded into every
    modality; for ``vq``, each expert's code (paper 002's cross-training, plus each modality's
    own code), the codebook moving when ``update``. ``encoded`` holds the preprocessed input of
    each modality, ``sizes`` their library sizes.

    The experts' samples are stacked along the batch axis (M * B rows, expert-major), so
    the hierarchical encoder and decoders run once. ``z``/``z_hat`` for the children are
    one expert's sample per cell, picked uniformly: a draw of the mixture. With ``present``
    (mosaic data) only the experts of the modalities a cell has count: in the pick, in the
    joint latent and (through ``experts["present"]``) in the loss.
    """
    mods = component.modalities
    means, variances = component.encoder.experts_of(encoded, [batch[m] for m in mods])
    n_experts = len(means)
    mean_stack, var_stack = tf.stack(means), tf.stack(variances)
    latent_loss = None
    if component.posterior == "vq":
        measured = None if present is None else tf.reshape(tf.stack(present), [-1])  # expert-major, as the means
        quantized, codes, commitment = component.encoder.quantized(
            tf.reshape(mean_stack, [-1, component.latent_dim]), update, measured)
        z_stack = tf.reshape(quantized, tf.shape(mean_stack))
        commitment = tf.reshape(commitment, [n_experts, -1])
        latent_loss = (present_mean(commitment, present) + component.encoder.alignment_loss(means, present))
    else:
        noise = keras.random.normal(tf.shape(mean_stack), seed=component.noise)
        z_stack = mean_stack + tf.sqrt(var_stack) * tf.cast(noise, mean_stack.dtype)  # (M, B, d)
    n = tf.shape(mean_stack)[1]
    flat = tf.reshape(z_stack, [-1, component.latent_dim])
    z_hat_flat = component.hierarchical_encoder(flat, [tf.tile(p, [n_experts, 1]) for p in parents])
    if present is None:
        pick = keras.random.randint(tf.reshape(n, [1]), 0, n_experts, seed=component.noise)
    else:  # uniform over the experts the cell has (over all for a cell with none)
        mask = tf.transpose(tf.stack(present))  # (B, M)
        has_any = tf.reduce_any(mask > 0, axis=1, keepdims=True)
        logits = tf.where(has_any, tf.math.log(tf.maximum(mask, 1e-30)), tf.zeros_like(mask))
        pick = tf.cast(keras.random.categorical(logits, 1, seed=component.noise)[:, 0], tf.int32)
    rows = pick * n + tf.range(n)
    z_mean, z_var = component.encoder.combine(means, variances, present)
    outputs = {"z_mean": z_mean, "z_var": z_var, "z": tf.gather(flat, rows), "z_hat": tf.gather(z_hat_flat, rows),
               "experts": {"mean": mean_stack, "var": var_stack, "z": z_stack}}
    if present is not None:
        outputs["experts"]["present"] = tf.stack(present)
    if latent_loss is not None:
        outputs["experts"]["latent_loss"] = latent_loss
        outputs["codes"] = codes
    if decode:
        outputs["raw"] = {m: component.decoders[m](z_hat_flat, tf.tile(batch[m], [n_experts, 1])) for m in mods}
        outputs["library_size"] = {m: tf.tile(sizes[m], [n_experts, 1]) for m in mods}
    return outputs


def stratified_terms(likelihoods: Mapping[str, Any], x: Mapping[str, Any], experts: Mapping[str, tf.Tensor],
                     params: Mapping[str, Mapping[str, tf.Tensor]], prior: Any) -> dict[str, Any]:
    """Paper 003 Eq. 2 per cell: the mean over experts m of ``-log p(x | z_m)`` and of
    ``log q(z_m | x) - log p(z_m)``, ``q`` the mixture: a one-sample estimate of its KL,
    which has no closed form. A quantised latent has no density: its ``kl`` term is the
    commitment and alignment loss instead (paper 002, Eq. 1-2)."""
    n_experts = int(experts["z"].shape[0])
    present = experts.get("present")
    present = None if present is None else tf.unstack(tf.cast(present, tf.float32))
    nll = {}
    for m, lik in likelihoods.items():
        target = x[m] if lik.accepts_sparse else as_dense(x[m])
        tiled = (tf.sparse.concat(0, [target] * n_experts) if isinstance(target, tf.SparseTensor)
                 else tf.tile(target, [n_experts, 1]))
        nll[m] = -present_mean(tf.reshape(lik.log_prob(tiled, params[m]), [n_experts, -1]), present)
    if "latent_loss" in experts:
        return {"kl": experts["latent_loss"], "nll": nll}
    z = tf.cast(experts["z"], tf.float32)
    log_q = log_mixture_density(z, tf.cast(experts["mean"], tf.float32), tf.cast(experts["var"], tf.float32),
                                present)
    log_p = tf.reshape(prior.log_prob(tf.reshape(z, [-1, int(experts["z"].shape[-1])])), [n_experts, -1])
    return {"kl": present_mean(log_q - log_p, present), "nll": nll}
