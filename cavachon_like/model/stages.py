"""One training stage of CAVACHON: optional VaDE pre-training, the mixture fit, then the ELBO."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from ..train import KLWarmup, ProgressiveBlending, fit_priors


def pretrains(model: Any, stage: Sequence[str]) -> bool:
    """Whether ``stage`` starts with pre-training: it has a mixture prior and the model asks for it."""
    return model.pretrain_epochs > 0 and any(model.components[c].prior.n_clusters for c in stage)


def fit_phase(model: Any, callbacks: list[keras.callbacks.Callback], **kwargs: Any) -> keras.callbacks.History:
    """One ``keras.Model.fit`` with a fresh optimizer (recompiled, so the loss is retraced)."""
    model._compile_stage()
    # The dataset shuffles itself (seeded), so Keras' own shuffle stays off.
    history = keras.Model.fit(model, callbacks=callbacks, shuffle=False, **kwargs)
    for callback in callbacks:
        if isinstance(callback, keras.callbacks.CSVLogger):
            callback.append = True  # later phases add rows instead of overwriting
    return history


def fit_stage(model: Any, stage: Sequence[str], epochs: int, callbacks: list[keras.callbacks.Callback],
              phase_kwargs: dict[str, Any]) -> list[tuple[str, str, keras.callbacks.History]]:
    """Train the components of ``stage`` (the rest frozen); ``(stage, phase, history)`` per phase.

    With a mixture prior and ``pretrain_epochs``, the stage pre-trains against N(0, I)
    with a KL warm-up and the prior frozen, fits the mixture to the latents, then
    trains the ELBO for ``epochs`` more; ``EarlyStopping`` sees only the ELBO phase.
    """
    model._set_active(stage)
    blend = [model.components[c].hierarchical_encoder for c in stage if model.components[c].parents]
    blending = []
    if blend and model.training_mode == "sequential" and model.progressive_epochs > 0:
        ramp = model.pretrain_epochs if pretrains(model, stage) else epochs
        blending = [ProgressiveBlending(blend, min(model.progressive_epochs, max(ramp - 1, 0)))]
    name = "+".join(stage)
    phases = []
    start = 0
    if pretrains(model, stage):
        model._pretraining = True
        for c in stage:  # the mixture is not in the pre-training loss
            model.components[c].prior.trainable = False
        warmup = [KLWarmup(model.kl_weight, max(model.pretrain_epochs // 2, 1))]
        plain = [c for c in callbacks if not isinstance(c, keras.callbacks.EarlyStopping)]
        try:
            history = fit_phase(model, epochs=model.pretrain_epochs, callbacks=plain + blending + warmup,
                                **phase_kwargs)
        finally:
            model._pretraining = False
            model.kl_weight.assign(1.0)
            model._set_active(stage)
        phases.append((name, "pretrain", history))
        fit_priors(model, stage, phase_kwargs["x"], seed=model.seed)
        start, blending = model.pretrain_epochs, []
    history = fit_phase(model, epochs=start + epochs, initial_epoch=start, callbacks=callbacks + blending,
                        **phase_kwargs)
    phases.append((name, "elbo", history))
    return phases
