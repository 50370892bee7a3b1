"""One training stage of CAVACHON: optional VaDE pre-training, the mixture fit, then the ELBO."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from ..train import FitProgress, KLWarmup, ProgressiveBlending, fit_priors


def pretrains(model: Any, stage: Sequence[str]) -> bool:
    """Whether ``stage`` starts with pre-training: it has a mixture prior and the model asks for it."""
    return model.pretrain_epochs > 0 and any(model.components[c].prior.n_clusters for c in stage)


def fit_phase(model: Any, progress: FitProgress, phase: int, callbacks: list[keras.callbacks.Callback],
              epochs: int, initial_epoch: int = 0, **kwargs: Any) -> keras.callbacks.History:
    """One ``keras.Model.fit`` with a fresh optimizer (recompiled, so the loss is retraced).

    A phase that a checkpoint left in progress continues from its last finished epoch
    (no epoch at all if early stopping had ended it); its History holds all its epochs.
    """
    progress.restore_model(model)
    model._compile_stage()
    initial_epoch = progress.initial_epoch(phase, initial_epoch)
    if progress.stopped(phase):
        epochs = initial_epoch
    recorder = progress.callback(phase, initial_epoch, callbacks)
    # The dataset shuffles itself (seeded), so Keras' own shuffle stays off.
    keras.Model.fit(model, callbacks=[*callbacks, recorder], shuffle=False, epochs=epochs,
                    initial_epoch=initial_epoch, **kwargs)
    for callback in callbacks:
        if isinstance(callback, keras.callbacks.CSVLogger):
            callback.append = True  # later phases add rows instead of overwriting
    return progress.history(phase)


def fit_stage(model: Any, stage: Sequence[str], epochs: int, callbacks: list[keras.callbacks.Callback],
              phase_kwargs: dict[str, Any], progress: FitProgress) -> list[tuple[str, str, keras.callbacks.History]]:
    """Train the components of ``stage`` (the rest frozen); ``(stage, phase, history)`` per phase.

    With a mixture prior and ``pretrain_epochs``, the stage pre-trains against N(0, I)
    with a KL warm-up and the prior frozen, fits the mixture to the latents, then
    trains the ELBO for ``epochs`` more; ``EarlyStopping`` sees only the ELBO phase.
    Phases that ``progress`` (a resumed checkpoint) has finished are skipped.
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
        phase = progress.next_phase()
        if progress.status(phase) != "done":
            model._pretraining = True
            for c in stage:  # the mixture is not in the pre-training loss
                model.components[c].prior.trainable = False
            warmup = [KLWarmup(model.kl_weight, max(model.pretrain_epochs // 2, 1))]
            plain = [c for c in callbacks if not isinstance(c, keras.callbacks.EarlyStopping)]
            try:
                fit_phase(model, progress, phase, plain + blending + warmup, epochs=model.pretrain_epochs,
                          **phase_kwargs)
            finally:
                model._pretraining = False
                model._set_active(stage)
        phases.append((name, "pretrain", progress.history(phase)))
        start, blending = model.pretrain_epochs, []
        phase = progress.next_phase()
        if progress.status(phase) == "fresh":
            progress.restore_model(model)  # a checkpoint taken as pre-training ended
            model.kl_weight.assign(1.0)
            # Cells in a fixed order, as an uninterrupted run would see them.
            progress.order.assign(progress.key(phase, -1))
            fit_priors(model, stage, phase_kwargs["x"], seed=model.seed)
    else:
        phase = progress.next_phase()
    if progress.status(phase) != "done":
        fit_phase(model, progress, phase, callbacks + blending, epochs=start + epochs, initial_epoch=start,
                  **phase_kwargs)
    phases.append((name, "elbo", progress.history(phase)))
    return phases
