"""Training CAVACHON: stage by stage, each with optional VaDE pre-training, the mixture fit, the ELBO, then EM of the priors."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ..data import MultiModality
from ..train import (
    FitProgress,
    KLWarmup,
    PriorUpdate,
    ProgressiveBlending,
    fit_priors,
    merge_histories,
    posteriors,
    release,
    training_plan,
)


def pretrains(model: Any, stage: Sequence[str]) -> bool:
    """Whether ``stage`` starts with pre-training: it has a mixture prior and the model asks for it."""
    return model.pretrain_epochs > 0 and any(model.components[c].prior.n_clusters for c in stage)


def compile_phase(model: Any, build: bool = True) -> None:
    """Compile ``model`` afresh (a new optimizer) for a training phase; ``build`` creates its slots.

    Built here, for the variables trainable now (the frozen components' are not among
    them), the slots exist before ``train_step`` is traced; created lazily inside it,
    they cost a second trace of it in every phase. ``build=False`` leaves the optimizer
    unbuilt, for the reset at the end of ``fit``: a saved model then carries no slots.
    The previous phase's optimizer is emptied (:func:`~cavachon_like.train.release`):
    TensorFlow would otherwise keep the slots of every phase allocated until the process ends.
    """
    if model._compile_kwargs is None:
        model.compile()
    kwargs = dict(model._compile_kwargs)
    # The optimizer's variables belong to the model's strategy even when fit is called
    # outside its scope (build and compile under the scope, fit anywhere, as in Keras).
    with model.distribute_strategy.scope():
        kwargs["optimizer"] = keras.optimizers.deserialize(kwargs["optimizer"])
        keras.Model.compile(model, **kwargs)
        if model._phase_optimizer is not None:  # one this function made: never the user's own object
            release(model._phase_optimizer, model.distribute_strategy)
        model._phase_optimizer = model.optimizer
        if build:
            model.optimizer.build(model.trainable_variables)


def fit_phase(model: Any, progress: FitProgress, phase: int, callbacks: list[keras.callbacks.Callback],
              epochs: int, initial_epoch: int = 0, **kwargs: Any) -> keras.callbacks.History:
    """One ``keras.Model.fit`` with a fresh optimizer (recompiled, so the loss is retraced).

    A phase that a checkpoint left in progress continues from its last finished epoch
    (no epoch at all if early stopping had ended it); its History holds all its epochs.
    """
    progress.restore_model(model)
    compile_phase(model)  # built before the first step: no second trace of train_step
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


def frozen_moments(model: Any, data: MultiModality, stage: Sequence[str], batch_size: int = 1024) -> dict[str, np.ndarray]:
    """Each cell's q(z|x) mean and variance side by side (``{component: (n_obs, 2 d)}``, float32)
    for the ancestors that stay frozen while ``stage`` trains and whose posterior is one Gaussian
    per cell (:attr:`~cavachon_like.module.Component.takes_moments`).

    Batches that carry them (``make_dataset(..., moments=...)``) skip those encoders: a
    frozen posterior does not change during the stage, so the encoders run once per stage
    instead of at every step. Training still draws each step's sample of z from these moments
    with the component's own noise, so it is exact in distribution (equal up to float rounding
    to encoding every batch). The encoders are read as a frozen layer is, in inference mode.
    Data left on disk get none (``{}``): their batches read every modality from the files anyway,
    and a pass over all cells would add a read of the files per stage.
    """
    trained = model.graph.closure(set(stage))
    frozen = [c for c in model.graph.order if c in trained and c not in stage and model.components[c].takes_moments]
    if not frozen or data.on_disk:
        return {}
    dataset = model.make_dataset(data, batch_size=batch_size, training=True)
    return {c: np.concatenate([mean, var], axis=1)
            for c, (mean, var) in posteriors(model, frozen, dataset, max_cells=None, dtype=np.float32).items()}


def fit_stage(model: Any, stage: Sequence[str], epochs: int, callbacks: list[keras.callbacks.Callback],
              phase_kwargs: dict[str, Any], progress: FitProgress) -> list[tuple[str, str, keras.callbacks.History]]:
    """Train the components of ``stage`` (the rest frozen); ``(stage, phase, history)`` per phase.

    With a mixture prior and ``pretrain_epochs``, the stage pre-trains against N(0, I)
    with a KL warm-up and the prior frozen, fits the mixture to the latents, then
    trains the ELBO for ``epochs`` more; ``EarlyStopping`` sees only the ELBO phase.
    The ELBO phase starts with ``kl_warmup_epochs`` of KL warm-up (if any) and ends with
    ``prior_em_iterations`` of EM of the priors on the training cells' posteriors
    (:class:`~cavachon_like.train.PriorUpdate`).
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
        update = []
        if model.prior_em_iterations:
            def same_cells(phase: int = phase) -> None:  # the order of the mixture fit, resumed or not
                progress.order.assign(progress.key(phase, -1))
            update = [PriorUpdate(stage, phase_kwargs["x"], model.prior_em_iterations, before=same_cells)]
        if model.kl_warmup_epochs:
            blending = blending + [KLWarmup(model.kl_weight, model.kl_warmup_epochs, start=start)]
        fit_phase(model, progress, phase, callbacks + blending + update, epochs=start + epochs,
                  initial_epoch=start, **phase_kwargs)
    phases.append((name, "elbo", progress.history(phase)))
    return phases


def fit_model(model: Any, x: Any, batch_size: int, epochs: int, verbose: Any, callbacks: list[keras.callbacks.Callback],
              validation_split: float, validation_data: Any, shuffle: bool, checkpoint: str | Path | None,
              resume: bool, **kwargs: Any) -> keras.callbacks.History:
    """The body of :meth:`CAVACHON.fit <cavachon_like.CAVACHON.fit>`: datasets, stages, checkpoint."""
    if resume and checkpoint is None:
        raise ValueError("resume=True needs the checkpoint folder of the run to continue.")
    signature = {"stages": [c for stage in training_plan(model.graph.order, model.training_mode) for c in stage],
                 "epochs": epochs, "pretrain_epochs": model.pretrain_epochs, "batch_size": batch_size,
                 "progressive_epochs": model.progressive_epochs, "seed": model.seed, "shuffle": shuffle,
                 "validation_split": validation_split,
                 "cells": None if not isinstance(x, MultiModality) else int(x.n_obs)}
    progress = FitProgress(checkpoint, signature, resume=resume)
    stage_data: Callable[[Sequence[str]], dict[str, Any]] | None = None  # a MultiModality's datasets per stage
    if isinstance(x, MultiModality):
        model.check_data(x)
        x.check_training(validation_split, seed=model.seed or 0)
        model.adapt(x, only_new=True)
        data, train_idx, val_idx, split_validation = x, None, None, False
        if validation_split:
            train_idx, val_idx = x.split(validation_split, seed=model.seed or 0)
            split_validation = validation_data is None

        plain: dict[str, Any] = {}  # the datasets without moments, made once for every stage that needs them

        def datasets_of(stage: Sequence[str]) -> dict[str, Any]:
            """The datasets of ``stage``: its frozen ancestors' posteriors computed once, carried per cell."""
            progress.restore_model(model)  # a resumed run's weights, before the frozen encoders are read
            moments = frozen_moments(model, data, stage)
            if not moments and plain:
                return plain
            datasets = {"x": model.make_dataset(data, batch_size=batch_size, shuffle=shuffle, indices=train_idx,
                                                order=progress.order, training=True, moments=moments)}
            if split_validation:
                datasets["validation_data"] = model.make_dataset(data, batch_size=batch_size, indices=val_idx,
                                                                 training=True, moments=moments)
            if not moments:
                plain.update(datasets)
            return datasets

        stage_data, x = datasets_of, None
        if split_validation:
            validation_data = None
    elif validation_split:
        raise ValueError("validation_split needs a MultiModality as `x`; pass validation_data for datasets.")
    unadapted = [f"{c}.{m}" for c, comp in model.components.items() for m, p in comp.preprocessors.items()
                 if not p.is_adapted]
    if unadapted:
        raise ValueError(f"the preprocessors of {unadapted} need data statistics (TF-IDF); call "
                         "model.adapt(data) with the MultiModality before fitting on a tf.data.Dataset.")
    if isinstance(validation_data, MultiModality):
        validation_data = model.make_dataset(validation_data, batch_size=batch_size, training=True)
    phase_kwargs = dict(x=x, verbose=verbose, validation_data=validation_data, **kwargs)
    stages = []
    for stage in training_plan(model.graph.order, model.training_mode):
        datasets = stage_data(stage) if stage_data is not None else {}
        stages += fit_stage(model, stage, epochs, callbacks, {**phase_kwargs, **datasets}, progress)
    progress.restore_model(model)  # a checkpoint of a finished fit: nothing was left to train
    model._set_active(model.graph.order)
    # Every stage starts with a fresh optimizer, so the last stage's slots are of no
    # further use; resetting keeps a saved model's optimizer consistent with all weights.
    compile_phase(model, build=False)
    return merge_histories(stages)
