"""Run a validated configuration: load data, build, train, write outputs."""
from __future__ import annotations

import inspect
import json
import logging
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import keras
import pandas as pd

from ..analysis import degenerate_clustering
from ..atomic import write_atomically
from ..data import (
    MultiModality,
    read_10x_multi,
    read_h5ad,
    read_h5mu,
    simulate,
    simulate_binned,
)
from ..errors import InputError, input_phase
from ..model import CAVACHON
from ..seed import set_seed
from ..train import FusedAdam, ReduceLROnPlateau
from ..train.checkpoint import FILENAME
from .schema import PLATEAU_DEFAULTS, ConfigError

logger = logging.getLogger(__name__)

#: ``data.simulate.kind`` -> the simulator it runs; the other keys of ``data.simulate`` are its arguments.
SIMULATORS = {"cells": simulate, "binned": simulate_binned}
#: Fewest optimiser steps per epoch of a configured run. On 500 SNARE-seq cells ``configs/snare.yaml``'s
#: batch of 256 made 2 steps per epoch, too few for the RNA mixture to find the cell types (2 clusters
#: held >= 1% of cells, NMI 0.14); at 16 steps it held 3-5 (NMI 0.22-0.44 over three seeds; README).
MIN_STEPS_PER_EPOCH = 16


def _training_cells(training: dict[str, Any], n_cells: int) -> int:
    """The cells ``fit`` trains on: ``n_cells`` less the validation split."""
    return n_cells - round(training["validation_split"] * n_cells)


def batch_size_for(training: dict[str, Any], n_cells: int, log: bool = True) -> int:
    """``training["batch_size"]``, lowered on small data so that an epoch over the training cells
    (``n_cells`` less the validation split) takes at least :data:`MIN_STEPS_PER_EPOCH` steps."""
    n_train = _training_cells(training, n_cells)
    size = max(1, min(int(training["batch_size"]), n_train // MIN_STEPS_PER_EPOCH))
    if log and size < training["batch_size"]:
        logger.info("training.batch_size %d lowered to %d: %d training cells, and an epoch takes at least %d steps.",
                    training["batch_size"], size, n_train, MIN_STEPS_PER_EPOCH)
    return size


def pretrain_epochs_for(config: dict[str, Any], n_cells: int) -> int:
    """``model.pretrain_epochs``, raised on small data so that pre-training takes at least
    ``training.min_pretrain_steps`` steps at the batch size of :func:`batch_size_for`; 0 (the
    paper's random start) stays 0.

    The default minimum, 350, is about the 370 steps that ``configs/snare.yaml``'s 10 epochs
    take on SNARE-seq's 9,278 training cells. On 500 of those cells the same 10 epochs are 170
    steps, after which the posteriors were wider than the spread of their means, the GMM that
    starts the mixture found few clusters and the largest RNA cluster ended with 37-64% of the
    cells (NMI 0.44, 20-NN 0.51); at 350 steps (21 epochs) it holds 24-26% (NMI 0.47, 20-NN
    0.56; PCA 0.57). ``benchmarks/snare_clustering.py --n-cells 500``, README.
    """
    epochs, minimum = int(config["model"]["pretrain_epochs"]), int(config["training"]["min_pretrain_steps"])
    training = config["training"]
    n_train = max(_training_cells(training, n_cells), 1)
    steps = math.ceil(n_train / batch_size_for(training, n_cells, log=False))
    needed = math.ceil(minimum / steps)
    if 0 < epochs < needed:
        logger.info("model.pretrain_epochs %d raised to %d: at %d steps per epoch, pre-training takes at least "
                    "training.min_pretrain_steps = %d steps.", epochs, needed, steps, minimum)
        return needed
    return epochs


def load_data(data_config: dict[str, Any], seed: int = 0) -> MultiModality:
    """The configured data set, joined across modalities and QC-filtered."""
    specs = data_config["modalities"]
    likelihoods = {m: s["likelihood"] for m, s in specs.items() if "likelihood" in s} or None
    batch_key = {m: s.get("batch_key") or [] for m, s in specs.items() if "batch_key" in s} or None
    kwargs = {"likelihoods": likelihoods, "batch_key": batch_key, "join": data_config["join"]}
    if data_config["path"] is not None:
        data = read_h5mu(data_config["path"], backed=data_config["backed"], **kwargs)
    elif data_config["h5ad"] is not None:
        paths = data_config["h5ad"]
        if not isinstance(paths, dict):
            raise ValueError(f"data.h5ad must map modality names to .h5ad files, got {paths!r}.")
        data = read_h5ad(paths, likelihood=kwargs.pop("likelihoods"), backed=data_config["backed"], **kwargs)
    elif data_config["tenx"] is not None:
        data = read_10x_multi(data_config["tenx"], **kwargs)
    elif data_config["simulate"] is not None:
        options = dict(data_config["simulate"])  # a copy: the config is saved and compared on resume
        kind = options.pop("kind", "cells")
        if not isinstance(kind, str) or kind not in SIMULATORS:
            raise ConfigError(f"data.simulate.kind: unknown simulator {kind!r}; accepted kinds: {list(SIMULATORS)} "
                              "('cells': paired ATAC + RNA, 'binned': channels on shared genomic bins).")
        accepted = list(inspect.signature(SIMULATORS[kind]).parameters)
        unknown = [k for k in options if k not in accepted]
        if unknown:
            raise ConfigError(f"data.simulate: {unknown} are not options of the {kind!r} simulator; accepted: "
                              f"{accepted}.")
        data = SIMULATORS[kind](**{"seed": seed, **options})
        if likelihoods or batch_key:
            data = MultiModality(data, likelihoods=likelihoods, batch_key=batch_key)
    else:
        raise InputError("no data: the config sets none of data.path, data.h5ad, data.tenx or data.simulate; pass "
                         "the data file with --data (or set data.simulate for simulated data).")
    if data_config["qc"]:
        data = data.apply_qc(data_config["qc"])
    return data


def build_model(config: dict[str, Any], data: MultiModality) -> CAVACHON:
    """A compiled model for ``data`` from the ``model`` and ``training`` sections (pre-training
    lengthened on small data: :func:`pretrain_epochs_for`)."""
    model = CAVACHON.from_data(
        data,
        components=config["model"]["components"],
        training=config["model"]["training"],
        progressive_epochs=config["model"]["progressive_epochs"],
        pretrain_epochs=pretrain_epochs_for(config, data.n_obs),
        prior_em_iterations=config["model"]["prior_em_iterations"],
        kl_warmup_epochs=config["model"]["kl_warmup_epochs"],
        seed=config["seed"],
    )
    model.compile(optimizer=FusedAdam(learning_rate=float(config["training"]["learning_rate"])))
    return model


def training_callbacks(config: dict[str, Any], out: Path) -> list[keras.callbacks.Callback]:
    """The callbacks a run of ``config`` trains with: learning-rate decay on plateaus, early
    stopping (best weights restored), TensorBoard; both watch the validation loss when there is
    a validation split, else the training loss."""
    training = config["training"]
    callbacks: list[keras.callbacks.Callback] = []
    monitor = "val_loss" if training["validation_split"] > 0 else "loss"
    if training["reduce_lr"] is not None:
        callbacks.append(ReduceLROnPlateau(**{"monitor": monitor, **PLATEAU_DEFAULTS, **training["reduce_lr"]}))
    if training["early_stopping"] is not None:
        options = {"monitor": monitor, "patience": 10, "restore_best_weights": True, **training["early_stopping"]}
        callbacks.append(keras.callbacks.EarlyStopping(**options))
    if training["tensorboard"]:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(out / "tensorboard")))
    return callbacks


#: What ``train`` writes, and what ``analyze`` and TensorBoard add, in an output folder.
RUN_FILES = ("result.h5mu", "model.keras", "history.csv", "latent.png")
#: ``checkpoint`` holds the training state while a run trains (removed once its outputs are written).
RUN_FOLDERS = ("analysis", "tensorboard", "checkpoint")
CHECKPOINT = "checkpoint"


def prepare_output(out: Path, overwrite: bool, resume: bool = False) -> bool:
    """Make ``out`` ready for a run: writable, and holding no earlier run unless ``overwrite``
    (which removes that run's files and folders, so nothing stale is left beside the new one)
    or ``resume`` (which continues an interrupted run). Returns whether there is a run to resume."""
    if overwrite and resume:
        raise InputError("--overwrite and --resume contradict each other: --resume continues the run in --out, "
                         "--overwrite replaces it; pass one.")
    earlier = [name for name in RUN_FILES + RUN_FOLDERS if (out / name).exists()]
    interrupted = (out / CHECKPOINT / FILENAME).exists()
    if resume and not interrupted and "result.h5mu" in earlier:
        raise InputError(f"the run in {out} is complete (it has result.h5mu and no checkpoint): nothing to resume. "
                         "Pass --overwrite to train it again.")
    if resume and interrupted:
        earlier = []  # keep the checkpoint, and whatever the interrupted run wrote, in place
    elif earlier and not overwrite:
        hint = " or --resume to continue it" if interrupted else ""
        raise InputError(f"{out} already holds a run ({', '.join(earlier)}); choose another --out, pass "
                         f"--overwrite to replace it{hint}.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise InputError(f"cannot write to the output folder {out}: {error.strerror or error}.") from error
    for name in earlier:
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return resume and interrupted


def check_resumed_config(folder: Path, config: dict[str, Any], resuming: bool) -> None:
    """Keep the run's configuration beside its checkpoint; a resumed run must use the same one."""
    path = folder / "config.json"
    current = json.loads(json.dumps(config, default=str))
    if resuming and path.exists():
        saved = json.loads(path.read_text())
        flat_saved, flat_now = _flatten(saved), _flatten(current)
        changed = sorted(k for k in set(flat_saved) | set(flat_now) if flat_saved.get(k) != flat_now.get(k))
        if changed:
            raise InputError(f"the configuration differs from the interrupted run's in {', '.join(changed)}; resume "
                             "with the same configuration (and --data, --epochs, --seed), or start afresh.")
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(current, indent=1)))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): tree}


def train(config: dict[str, Any], out: str | Path, overwrite: bool = False, resume: bool = False) -> dict[str, Any]:
    """Train as configured and write ``result.h5mu``, ``model.keras``, ``history.csv``, ``latent.png``.

    Everything the run needs is checked before training: the output folder (writable,
    no earlier run unless ``overwrite`` or ``resume``), the data, the model and its
    callbacks, and the label and colouring columns. While training, ``out/checkpoint``
    holds the state after every epoch; ``resume`` continues an interrupted run from it
    (same configuration), ending where an uninterrupted run ends. Outputs are written
    under temporary names and renamed, then the checkpoint is removed. Returns the
    paths written, the trained model, the annotated data, timings and warnings
    (degenerate clusterings, also logged).
    """
    out = Path(out)
    set_seed(config["seed"])
    with input_phase():
        resuming = prepare_output(out, overwrite, resume)
        check_resumed_config(out / CHECKPOINT, config, resuming)
        data = load_data(config["data"], seed=config["seed"])
        logger.info("data: %s", data)
        added = {f"cluster_{c.get('name')}" for c in config["model"]["components"]}  # written by training
        for key in [config["data"]["label_key"], *config["output"]["color_by"]]:
            if key is not None and key not in added:
                data.obs_column(key)  # a typo fails here, not after training
        model = build_model(config, data)
        model.check_data(data)
        callbacks = training_callbacks(config, out)
    started = time.perf_counter()
    try:
        history = model.fit(
            data,
            epochs=config["training"]["epochs"],
            batch_size=batch_size_for(config["training"], data.n_obs),
            validation_split=config["training"]["validation_split"],
            callbacks=callbacks,
            verbose=config["training"]["verbose"],
            checkpoint=out / CHECKPOINT,
            resume=resuming,
        )
        seconds = time.perf_counter() - started
        result = _write_outputs(config, out, model, data, history, seconds)
    except BaseException:
        if (out / CHECKPOINT / FILENAME).exists():
            logger.error("the run stopped; %s holds its state after the last finished epoch: continue it with "
                         "`cavachon-like train ... --resume` and the same configuration.", out / CHECKPOINT)
        raise
    shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    return result


def _write_outputs(config: dict[str, Any], out: Path, model: CAVACHON, data: MultiModality,
                   history: keras.callbacks.History, seconds: float) -> dict[str, Any]:
    from ..plotting import plot_latents

    model.annotate(data)
    problems = {
        c: problem
        for c in model.latent_names
        if f"cluster_{c}" in data.obs and (problem := degenerate_clustering(data.obs[f"cluster_{c}"], c))
    }
    for problem in problems.values():
        logger.warning(problem)
    data.uns["cavachon_like"]["run"] = json.dumps({"config": config, "train_seconds": seconds}, default=str)
    paths = {
        "result": out / "result.h5mu",
        "model": out / "model.keras",
        "history": out / "history.csv",
        "latent": out / "latent.png",
    }
    write_atomically(paths["result"], data.write)
    write_atomically(paths["model"], model.save)
    write_atomically(paths["history"], lambda tmp: pd.DataFrame(history.history).to_csv(tmp, index=False))
    color_by = list(config["output"]["color_by"])
    label = config["data"]["label_key"]
    if label and label not in color_by:
        color_by.append(label)
    figure = plot_latents(data, model.latent_names, color_by=color_by, method=config["output"]["embedding"],
                          seed=config["seed"], warnings=problems)
    write_atomically(paths["latent"], lambda tmp: figure.savefig(tmp, dpi=120, bbox_inches="tight"))
    return {"paths": paths, "model": model, "data": data, "history": history, "train_seconds": seconds,
            "warnings": list(problems.values())}
