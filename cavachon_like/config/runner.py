"""Run a validated configuration: load data, build, train, write outputs."""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import keras
import pandas as pd

from ..analysis import degenerate_clustering
from ..data import MultiModality, read_10x_multi, read_h5ad, read_h5mu, simulate
from ..errors import InputError, input_phase
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
    elif data_config["simulate"] is not None:
        data = simulate(**{"seed": seed, **data_config["simulate"]})
        if likelihoods or batch_key:
            data = MultiModality(data, likelihoods=likelihoods, batch_key=batch_key)
    else:
        raise InputError("no data: the config sets none of data.path, data.h5ad, data.tenx or data.simulate; pass "
                         "the data file with --data (or set data.simulate for simulated data).")
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


#: What ``train`` writes, and what ``analyze`` and TensorBoard add, in an output folder.
RUN_FILES = ("result.h5mu", "model.keras", "history.csv", "latent.png")
RUN_FOLDERS = ("analysis", "tensorboard")


def prepare_output(out: Path, overwrite: bool) -> None:
    """Make ``out`` ready for a run: writable, and holding no earlier run unless ``overwrite``
    (which removes that run's files and folders, so nothing stale is left beside the new one)."""
    earlier = [name for name in RUN_FILES + RUN_FOLDERS if (out / name).exists()]
    if earlier and not overwrite:
        raise InputError(f"{out} already holds a run ({', '.join(earlier)}); choose another --out or pass "
                         "--overwrite to replace it.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise InputError(f"cannot write to the output folder {out}: {error.strerror or error}.") from error
    for name in earlier:
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def train(config: dict[str, Any], out: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """Train as configured and write ``result.h5mu``, ``model.keras``, ``history.csv``, ``latent.png``.

    Everything the run needs is checked before training: the output folder (writable,
    no earlier run unless ``overwrite``), the data, the model and its callbacks, and the
    label and colouring columns. Returns the paths written, the trained model, the
    annotated data, timings and warnings (degenerate clusterings, also logged).
    """
    from ..plotting import plot_latents

    out = Path(out)
    set_seed(config["seed"])
    with input_phase():
        prepare_output(out, overwrite)
        data = load_data(config["data"], seed=config["seed"])
        logger.info("data: %s", data)
        added = {f"cluster_{c.get('name')}" for c in config["model"]["components"]}  # written by training
        for key in [config["data"]["label_key"], *config["output"]["color_by"]]:
            if key is not None and key not in added:
                data.obs_column(key)  # a typo fails here, not after training
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
