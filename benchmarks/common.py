"""Helpers shared by the benchmark scripts: data paths, model variants, timing, memory, FLOPs.

Only the standard library and numpy are imported at module level, so the MultiVI
script (which runs in its own virtual environment without TensorFlow) can use it too.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "snare_mouse_cortex.h5mu"
DEFAULT_CACHE = BENCHMARKS / "cache"
SNARE_CONFIG = REPO / "configs" / "snare.yaml"

#: MultiVI's architecture on this data, read from scvi-tools 1.4 (scvi/module/_multivae.py):
#: n_hidden = min(128, int(sqrt(n_regions))) = 128 for 20,089 regions, n_latent =
#: int(sqrt(n_hidden)) = 11, n_layers_encoder = n_layers_decoder = 2.
MULTIVI_HIDDEN = 128
MULTIVI_LATENT = 11
MULTIVI_LAYERS = 2

#: Quality runs score the latent after every epoch up to this one, then after every EVAL_EVERY-th.
EVAL_DENSE_EPOCHS = 50
EVAL_EVERY = 5


def require_file(path: str | Path, what: str = "data file") -> Path:
    """``path`` as a Path, or a clear error naming it and how to pass another."""
    path = Path(path)
    if not path.exists():
        raise SystemExit(
            f"{what} not found: {path}\n"
            "Pass its location with --data PATH (the SNARE-seq file is ../shared/data/snare_mouse_cortex.h5mu "
            "next to the repository)."
        )
    return path


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far, in bytes.

    Linux's ``VmHWM`` (the high-water mark of this process' own address space) is
    preferred over ``getrusage``'s ``ru_maxrss``: a child's ``ru_maxrss`` starts at
    the parent's resident size at fork time, so a model process started by a parent
    that holds TensorFlow would report at least the parent's 1.3 GB.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


def write_json(path: str | Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` as indented JSON; numpy scalars and arrays become plain numbers and lists."""

    def default(value: Any) -> Any:
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, Path):
            return str(value)
        raise TypeError(f"not JSON serialisable: {type(value).__name__}")

    Path(path).write_text(json.dumps(payload, indent=2, default=default) + "\n")


def machine() -> dict[str, Any]:
    """CPU model, cores and memory of this machine, for the report."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    except OSError:
        pass
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f" {f}" in flags]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_bytes": memory,
        "simd": simd,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
    }


def median(values: Sequence[float]) -> float:
    """Median of ``values`` (NaN when empty)."""
    return float(np.median(values)) if len(values) else float("nan")


def evaluated(epoch: int) -> bool:
    """Whether a quality run saves the latent after its ``epoch``-th epoch (1-based, all phases counted)."""
    return epoch <= EVAL_DENSE_EPOCHS or epoch % EVAL_EVERY == 0


def speed_summary(records: Sequence[Mapping[str, Any]], n_train: int) -> dict[str, Any]:
    """Steady-state epoch times of a timing run, per stage and for the whole model.

    ``records`` are per-epoch dicts (``stage``, ``seconds``, ``train_seconds``,
    ``step_seconds``) in training order. Each stage's first epoch (tracing) is left out
    of its medians and reported on its own. A whole-model epoch takes every stage
    through one epoch: the sum of the stages' medians. ``cells_per_second`` is
    ``n_train`` over the training part of a whole-model epoch, the one definition of
    throughput for every model.
    """
    stages = {}
    for stage in dict.fromkeys(r["stage"] for r in records):
        rows = [r for r in records if r["stage"] == stage]
        steady = rows[1:] or rows
        stages[stage] = {
            "epochs": len(rows),
            "first_epoch_seconds": rows[0]["seconds"],
            "train_seconds": median([r["train_seconds"] for r in steady]),
            "seconds": median([r["seconds"] for r in steady]),
            "median_step_seconds": median([s for r in steady for s in r["step_seconds"]]),
        }
    train = sum(s["train_seconds"] for s in stages.values())
    return {
        "stages": stages,
        "seconds_per_model_epoch": train,
        "seconds_per_model_epoch_with_validation": sum(s["seconds"] for s in stages.values()),
        "first_model_epoch_seconds": sum(s["first_epoch_seconds"] for s in stages.values()),
        "cells_per_second": n_train / train,
    }
