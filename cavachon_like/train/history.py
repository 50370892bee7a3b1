"""One Keras History for a multi-stage fit."""
from __future__ import annotations

import math
from collections.abc import Sequence

import keras


def merge_histories(stages: Sequence[tuple[str, str, keras.callbacks.History]]) -> keras.callbacks.History:
    """Concatenate ``(stage, phase, history)`` parts; adds ``stage``, ``phase`` and a running ``epoch``.

    Metrics a stage did not report (e.g. another component's KL) are NaN there, so
    every column has one value per epoch and the result loads into a DataFrame.
    """
    keys: list[str] = []
    for _, _, history in stages:
        keys.extend(k for k in history.history if k not in keys)
    merged: dict[str, list] = {"stage": [], "phase": [], "epoch": [], **{k: [] for k in keys}}
    epoch = 0
    for stage, phase, history in stages:
        n = len(next(iter(history.history.values()), []))
        for i in range(n):
            merged["stage"].append(stage)
            merged["phase"].append(phase)
            merged["epoch"].append(epoch)
            epoch += 1
            for k in keys:
                values = history.history.get(k)
                merged[k].append(float(values[i]) if values is not None else math.nan)
    result = keras.callbacks.History()
    result.history = merged
    result.epoch = list(merged["epoch"])
    return result
