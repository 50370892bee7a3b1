"""Run a validated configuration: load data, build, train, write outputs."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import keras
import pandas as pd

from ..analysis import degenerate_clustering
from ..data import MultiModality, read_10x_multi, read_h5ad, read_h5mu, simulate
from ..errors import input_phase
from ..model import CAVACHON
from ..seed import set_seed

logger = logging.getLogger(__name__)


def load_data(data_config: dict[str, Any], seed: int = 0) -> MultiModality:
    """The configured data set, joined across modalities and QC-filtered."""
    specs = data_config["modalities"]
    likelihoods = {m: s["likelihood"] for m, s in specs.items() if "likelihood" in s} or None
    batch_key = {m: s.get("batch_key") or [] for m, s in specs.items() if "batch_key" in s} or None
    kwargs = {"likelihoods": likelihoods, "batch_key": batch_key, "join": data_config["join"]}
    if data_config["path"] is not None:
        data = read_h5mu(data_config["path"], **kwargs)
    elif data_config["h5ad"] is not None:
        paths = data_config["h5ad"]
        if not isinstance(paths, dict):
            raise ValueError(f"data.h5ad must map modality names to .h5ad files, got {paths!r}.")
        data = read_h5ad(paths, likelihood=kwargs.pop("likelihoods"), **kwargs)
    elif data_config["tenx"] is not None:
        data = read_10x_multi(data_config["tenx"], **kwargs)
    else:
        data = simulate(**{"seed": seed, **(data_config["simulate"] or {})})
        if likelihoods or batch_key:
            data = MultiModality(data, likelihoods=likelihoods, batch_key=batch_key)
    if data_config["qc"]:
        data = data.apply_qc(data_config["qc"])
    return data


def build_model(config: dict[str, Any], data: MultiModality) -> CAVACHON:
    """A compiled model for ``data`` from the ``model`` and ``training`` sections."""
    model = CAVACHON.from_data(
        data,
        components=config["model"]["components"],
        training=config["model"]["training"],
        progressive_epochs=config["model"]["progressive_epochs"],
        pretrain_epochs=config["model"]["pretrain_epochs"],
        seed=config["seed"],
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=float(config["training"]["learning_rate"])))
    return model


def _callbacks(config: dict[str, Any], out: Path) -> list[keras.callbacks.Callback]:
    training = config["training"]
    callbacks: list[keras.callbacks.Callback] = []
    if training["early_stopping"] is not None:
        monitor = "val_loss" if training["validation_split"] > 0 else "loss"
        options = {"monitor": monitor, "patience": 10, "restore_best_weights": True, **training["early_stopping"]}
        callbacks.append(keras.callbacks.EarlyStopping(**options))
    if training["tensorboard"]:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(out / "tensorboard")))
    return callbacks


def train(config: dict[str, Any], out: str | Path) -> dict[str, Any]:
    """Train as configured and write ``result.h5mu``, ``model.keras``, ``history.csv``, ``latent.png``.

    Returns the paths written, the trained model, the annotated data, timings and
    warnings (degenerate clusterings, also logged).
    """
    from ..plotting import plot_latents

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(config["seed"])
    with input_phase():
        data = load_data(config["data"], seed=config["seed"])
        logger.info("data: %s", data)
        model = build_model(config, data)
        model.check_data(data)
        callbacks = _callbacks(config, out)
    started = time.perf_counter()
    history = model.fit(
        data,
        epochs=config["training"]["epochs"],
        batch_size=config["training"]["batch_size"],
        validation_split=config["training"]["validation_split"],
        callbacks=callbacks,
        verbose=config["training"]["verbose"],
    )
    seconds = time.perf_counter() - started
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
    data.write(paths["result"])
    model.save(paths["model"])
    pd.DataFrame(history.history).to_csv(paths["history"], index=False)
    color_by = list(config["output"]["color_by"])
    label = config["data"]["label_key"]
    if label and label not in color_by:
        color_by.append(label)
    figure = plot_latents(data, model.latent_names, color_by=color_by, method=config["output"]["embedding"],
                          seed=config["seed"], warnings=problems)
    figure.savefig(paths["latent"], dpi=120, bbox_inches="tight")
    return {"paths": paths, "model": model, "data": data, "history": history, "train_seconds": seconds,
            "warnings": list(problems.values())}
