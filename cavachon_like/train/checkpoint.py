"""Resumable training: where a multi-phase fit is, and everything needed to continue it.

A fit runs phases (per stage: optional pre-training, then the ELBO), each a
``keras.Model.fit``. :class:`FitProgress` numbers the phases, records every epoch's logs
and, given a directory, writes after every epoch (and at the end of every phase) one
file, ``checkpoint.npz``, holding the model's variables (weights, mixture, blending,
noise-generator states), the optimizer's slots, the early-stopping and plateau state, the logs so
far and the position (phase, epoch). The file is written under a temporary name and
renamed, so a run killed at any moment leaves the previous complete checkpoint.

Resuming skips the finished phases, restores the variables and continues the phase in
progress from its last finished epoch with its optimizer, early-stopping and plateau state;
with the same seed, data and settings it ends where an uninterrupted run ends.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ..atomic import write_atomically
from ..errors import InputError
from .scaling import is_chief

FILENAME = "checkpoint.npz"
FORMAT = 1


def _paths(variables: Sequence[Any]) -> list[list]:
    return [[v.path, list(v.shape)] for v in variables]


def _assign(variables: Sequence[Any], values: Sequence[np.ndarray], saved: list[list], what: str) -> None:
    # Shapes, not paths: Keras numbers unnamed layers per session, so paths differ between
    # two identical models in one process; the order of the variables is the model's.
    here = [list(v.shape) for v in variables]
    if here != [shape for _, shape in saved]:
        first = next((i for i, (a, b) in enumerate(zip(here, saved)) if a != b[1]), min(len(here), len(saved)))
        seen = saved[first][0] if first < len(saved) else "nothing"
        raise InputError(f"the checkpoint's {what} variables do not fit this model ({len(saved)} saved, "
                         f"{len(variables)} here; the first mismatch is {seen}); was it written by another "
                         "model or configuration?")
    for variable, value in zip(variables, values):
        variable.assign(value)


class FitProgress:
    """Phase bookkeeping of one ``fit``, optionally checkpointed to ``directory``.

    Parameters
    ----------
    directory
        Folder for ``checkpoint.npz``; ``None`` keeps the progress in memory only.
    signature
        What must not change between a run and its resumption (stages, epochs,
        batch size, cells, seed); a mismatch is refused with the differing keys.
    resume
        Continue from the checkpoint in ``directory`` if there is one (otherwise
        start afresh and overwrite it).
    """

    def __init__(self, directory: str | Path | None, signature: Mapping[str, Any], resume: bool = False) -> None:
        self.path = None if directory is None else Path(directory) / FILENAME
        self.signature = json.loads(json.dumps(dict(signature)))
        self.rows: list[dict[str, Any]] = []  # {"phase", "epoch", "logs"} per finished epoch
        self.position = {"phase": -1, "epoch": 0, "complete": True, "stopped": False}
        self.arrays: dict[str, np.ndarray] = {}
        self.meta: dict[str, Any] = {}
        self._phases = 0
        self._model_pending = False
        #: Which order the training cells are shuffled in: set per epoch from the phase and
        #: epoch (see :meth:`key`), so a resumed epoch sees the cells in the order the
        #: uninterrupted run did. Pass it to ``make_dataset(order=...)``.
        self.order = tf.Variable(0, dtype=tf.int64, trainable=False, name="cell_order")
        if resume and self.path is not None and self.path.exists():
            self._read()

    # ------------------------------------------------------------------ reading
    def _read(self) -> None:
        try:
            with np.load(self.path) as npz:
                arrays = {k: npz[k] for k in npz.files}
            meta = json.loads(str(arrays.pop("meta")))
        except (OSError, ValueError, KeyError) as error:
            raise InputError(f"cannot read the checkpoint {self.path}: {error}. Start afresh without resume "
                             "(the file is rewritten).") from error
        if meta.get("format") != FORMAT:
            raise InputError(f"{self.path} was written by another version of cavachon_like (format "
                             f"{meta.get('format')}, this one reads {FORMAT}); start afresh.")
        changed = sorted(k for k in set(meta["signature"]) | set(self.signature)
                         if meta["signature"].get(k) != self.signature.get(k))
        if changed:
            details = "; ".join(f"{k}: {meta['signature'].get(k)!r} then, {self.signature.get(k)!r} now"
                                for k in changed)
            raise InputError(f"the checkpoint {self.path} belongs to a different run ({details}); resume with "
                             "the same settings and data, or start afresh.")
        self.meta, self.arrays = meta, arrays
        self._model_pending = True
        self.rows = meta["rows"]
        self.position = meta["position"]

    # ------------------------------------------------------------------ phases
    def next_phase(self) -> int:
        """Number the next phase of the fit (0, 1, ...)."""
        self._phases += 1
        return self._phases - 1

    def status(self, phase: int) -> str:
        """``"done"`` (finished before the checkpoint), ``"resumed"`` (in progress) or ``"fresh"``."""
        at = self.position["phase"]
        if phase < at or (phase == at and self.position["complete"]):
            return "done"
        return "resumed" if phase == at else "fresh"

    def initial_epoch(self, phase: int, default: int) -> int:
        """The epoch ``phase`` starts from: the checkpoint's when the phase was in progress, else ``default``."""
        return int(self.position["epoch"]) if self.status(phase) == "resumed" else default

    def stopped(self, phase: int) -> bool:
        """Whether early stopping ended ``phase`` before the checkpoint (so no epoch is left)."""
        return self.status(phase) == "resumed" and bool(self.position["stopped"])

    @staticmethod
    def key(phase: int, epoch: int) -> int:
        """The shuffling key of ``epoch`` of ``phase`` (``epoch=-1``: the pass before it)."""
        return phase * 2**20 + epoch

    def history(self, phase: int) -> keras.callbacks.History:
        """The logs of ``phase``'s epochs as a Keras History."""
        history = keras.callbacks.History()
        rows = [r for r in self.rows if r["phase"] == phase]
        keys = list(dict.fromkeys(k for r in rows for k in r["logs"]))
        history.history = {k: [r["logs"].get(k, float("nan")) for r in rows] for k in keys}
        history.epoch = [r["epoch"] for r in rows]
        return history

    # ------------------------------------------------------------------ restoring
    def restore_model(self, model: keras.Model) -> None:
        """Load the model's variables from the checkpoint (once; later calls do nothing)."""
        if not self._model_pending:
            return
        self._model_pending = False
        values = [self.arrays.pop(f"model/{i}") for i in range(len(self.meta["model"]))]
        _assign(model.variables, values, self.meta.pop("model"), "model")

    def _restore_phase(self, model: keras.Model, early_stopping: Sequence[keras.callbacks.EarlyStopping],
                       plateaus: Sequence[keras.callbacks.ReduceLROnPlateau]) -> None:
        """Optimizer slots (with the learning rate), early-stopping and plateau state of the phase in progress."""
        optimizer = model.optimizer
        if not optimizer.built:
            with model.distribute_strategy.scope():
                optimizer.build(model.trainable_variables)
        values = [self.arrays.pop(f"optimizer/{i}") for i in range(len(self.meta["optimizer"]))]
        _assign(optimizer.variables, values, self.meta["optimizer"], "optimizer")
        for i, (callback, state) in enumerate(zip(early_stopping, self.meta["early_stopping"])):
            for key in ("wait", "best", "best_epoch", "stopped_epoch"):
                setattr(callback, key, state[key])
            if state["n_best_weights"]:
                callback.best_weights = [self.arrays.pop(f"early_stopping/{i}/{j}")
                                         for j in range(state["n_best_weights"])]
        # The rate itself is an optimizer variable, restored above; the plateau's counters are not.
        for callback, state in zip(plateaus, self.meta.get("plateaus", [])):
            for key, value in state.items():
                setattr(callback, key, value)
        self.arrays.clear()

    # ------------------------------------------------------------------ writing
    def _write(self, model: keras.Model, early_stopping: Sequence[keras.callbacks.EarlyStopping],
               plateaus: Sequence[keras.callbacks.ReduceLROnPlateau]) -> None:
        arrays = {f"model/{i}": np.asarray(v) for i, v in enumerate(model.variables)}
        optimizer = model.optimizer.variables if model.optimizer is not None and model.optimizer.built else []
        arrays.update({f"optimizer/{i}": np.asarray(v) for i, v in enumerate(optimizer)})
        states = []
        for i, callback in enumerate(early_stopping):
            best = callback.best_weights or []
            arrays.update({f"early_stopping/{i}/{j}": np.asarray(w) for j, w in enumerate(best)})
            states.append({"wait": int(callback.wait), "best_epoch": int(callback.best_epoch),
                           "stopped_epoch": int(callback.stopped_epoch), "n_best_weights": len(best),
                           "best": None if callback.best is None else float(callback.best)})
        meta = {"format": FORMAT, "signature": self.signature, "position": self.position, "rows": self.rows,
                "model": _paths(model.variables), "optimizer": _paths(optimizer), "early_stopping": states,
                "plateaus": [{"wait": int(c.wait), "cooldown_counter": int(c.cooldown_counter),
                              "best": None if c.best is None else float(c.best)} for c in plateaus]}
        arrays["meta"] = np.array(json.dumps(meta))
        # Workers of a multi-worker strategy hold the same state; one file, written by the chief.
        if is_chief(model.distribute_strategy):
            write_atomically(self.path, lambda tmp: np.savez(tmp, **arrays))

    def callback(self, phase: int, initial_epoch: int,
                 callbacks: Sequence[keras.callbacks.Callback]) -> keras.callbacks.Callback:
        """The callback that records (and checkpoints) ``phase``; put it after all the others,
        so it sees early stopping's decision and restored weights."""
        early_stopping = [c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping)]
        plateaus = [c for c in callbacks if isinstance(c, keras.callbacks.ReduceLROnPlateau)]
        return _Recorder(self, phase, initial_epoch, early_stopping, plateaus)


class _Recorder(keras.callbacks.Callback):
    def __init__(self, progress: FitProgress, phase: int, initial_epoch: int,
                 early_stopping: list[keras.callbacks.EarlyStopping],
                 plateaus: list[keras.callbacks.ReduceLROnPlateau]) -> None:
        super().__init__()
        self.progress = progress
        self.phase = phase
        self.epoch = initial_epoch
        self.early_stopping = early_stopping
        self.plateaus = plateaus

    def on_train_begin(self, logs=None) -> None:
        if self.progress.status(self.phase) == "resumed":
            # After EarlyStopping.on_train_begin, which resets its state.
            self.progress._restore_phase(self.model, self.early_stopping, self.plateaus)

    def _save(self, epoch: int, complete: bool) -> None:
        self.progress.position = {"phase": self.phase, "epoch": epoch, "complete": complete,
                                  "stopped": bool(self.model.stop_training)}
        if self.progress.path is not None:
            self.progress._write(self.model, self.early_stopping, self.plateaus)

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.progress.order.assign(self.progress.key(self.phase, epoch))

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        logs = {k: float(v) for k, v in (logs or {}).items()}
        self.progress.rows.append({"phase": self.phase, "epoch": int(epoch), "logs": logs})
        self.epoch = epoch + 1
        self._save(self.epoch, complete=False)

    def on_train_end(self, logs=None) -> None:
        self._save(self.epoch, complete=True)
