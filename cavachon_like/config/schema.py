"""The YAML run configuration: schema, defaults and validation with precise errors."""
from __future__ import annotations

import copy
import difflib
import importlib
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError

#: The schema: for each key its accepted type(s) and default. Nested dicts are
#: sections. Component dicts are checked by the model itself.
SCHEMA: dict[str, Any] = {
    "seed": ((int,), 0),
    "plugins": ((list,), []),
    "data": {
        "path": ((str, type(None)), None),
        "h5ad": ((dict, type(None)), None),
        "tenx": ((str, dict, type(None)), None),
        "simulate": ((dict, type(None)), None),
        "join": ((str,), "strict"),
        "backed": ((bool, str), "auto"),
        "label_key": ((str, type(None)), None),
        "modalities": ((dict,), {}),
        "qc": ((list,), []),
    },
    "model": {
        "training": ((str,), "sequential"),
        "progressive_epochs": ((int,), 5),
        "pretrain_epochs": ((int,), 10),
        "prior_em_iterations": ((int,), 100),
        "kl_warmup_epochs": ((int,), 0),
        "components": ((list,), None),
    },
    "training": {
        "epochs": ((int,), 50),
        "batch_size": ((int,), 256),
        "min_pretrain_steps": ((int,), 350),
        "learning_rate": ((float, int), 1e-3),
        "validation_split": ((float, int), 0.1),
        "reduce_lr": ((dict, type(None)), None),
        "early_stopping": ((dict, type(None)), {"patience": 10}),
        "tensorboard": ((bool,), False),
        "verbose": ((int, str), "auto"),
    },
    "output": {
        "embedding": ((str,), "umap"),
        "color_by": ((list,), []),
    },
}
#: What ``training.reduce_lr`` leaves unset (``{}`` is these), rather than Keras' own defaults.
PLATEAU_DEFAULTS = {"factor": 0.5, "patience": 3, "min_lr": 1e-5}
#: Keras' ``ReduceLROnPlateau`` arguments that ``training.reduce_lr`` may set, with their types.
PLATEAU_KEYS = {"factor": (float, int), "patience": (int,), "min_lr": (float, int), "min_delta": (float, int),
                "cooldown": (int,), "monitor": (str,), "mode": (str,), "verbose": (int,)}
MODALITY_SPEC_KEYS = {"likelihood": (str,), "batch_key": (str, list, type(None))}
DATA_SOURCES = ("path", "h5ad", "tenx", "simulate")
#: Keys of QC steps that name files (``bin_genome``): resolved like ``data.path``.
QC_FILE_KEYS = ("gene_table", "blacklist")


class ConfigError(InputError):
    """A configuration problem, naming the offending key."""


def _type_names(types: tuple[type, ...]) -> str:
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)


def _merge(schema: dict[str, Any], given: Any, path: str) -> dict[str, Any]:
    if not isinstance(given, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(given).__name__}.")
    unknown = [k for k in given if k not in schema]
    if unknown:
        key = unknown[0]
        hint = difflib.get_close_matches(str(key), list(schema), n=1)
        where = f"{path}.{key}" if path else str(key)
        raise ConfigError(
            f"{where}: unknown key" + (f"; did you mean {hint[0]!r}?" if hint else f"; allowed: {sorted(schema)}.")
        )
    result: dict[str, Any] = {}
    for key, rule in schema.items():
        where = f"{path}.{key}" if path else key
        if isinstance(rule, dict):
            result[key] = _merge(rule, given.get(key, {}) or {}, where)
            continue
        types, default = rule
        value = given.get(key, copy.deepcopy(default))
        if value is None and default is None and type(None) not in types:
            raise ConfigError(f"{where}: required.")
        # bool is an int in Python; an epochs of `true` is a mistake, not 1.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ConfigError(f"{where}: expected {_type_names(types)}, got {type(value).__name__} ({value!r}).")
        result[key] = value
    return result


def _check_semantics(config: dict[str, Any], base: Path) -> None:
    data = config["data"]
    sources = [s for s in DATA_SOURCES if data[s] is not None]
    if len(sources) > 1:
        raise ConfigError(f"data: give one source, got {sources}.")
    if data["path"] is not None:
        path = (base / data["path"]).expanduser()
        if not path.exists():
            raise ConfigError(f"data.path: file not found: {path}.")
        data["path"] = str(path)
    if data["h5ad"] is not None:
        for name, value in data["h5ad"].items():
            path = (base / str(value)).expanduser()
            if not path.exists():
                raise ConfigError(f"data.h5ad.{name}: file not found: {path}.")
            data["h5ad"][name] = str(path)
    if data["tenx"] is not None:
        entries = data["tenx"] if isinstance(data["tenx"], dict) else {"": data["tenx"]}
        for name, value in entries.items():
            path = (base / str(value)).expanduser()
            if not path.exists():
                raise ConfigError(f"data.tenx{'.' + name if name else ''}: folder not found: {path}.")
    for name, spec in data["modalities"].items():
        if not isinstance(spec, dict):
            raise ConfigError(f"data.modalities.{name}: expected a mapping, got {type(spec).__name__}.")
        for key, value in spec.items():
            if key not in MODALITY_SPEC_KEYS:
                raise ConfigError(f"data.modalities.{name}.{key}: unknown key; allowed: {sorted(MODALITY_SPEC_KEYS)}.")
            if not isinstance(value, MODALITY_SPEC_KEYS[key]):
                raise ConfigError(
                    f"data.modalities.{name}.{key}: expected {_type_names(MODALITY_SPEC_KEYS[key])}, "
                    f"got {type(value).__name__}."
                )
    for i, step in enumerate(data["qc"]):
        if not isinstance(step, dict) or "step" not in step:
            raise ConfigError(f"data.qc[{i}]: expected a mapping with a 'step' key.")
        # Files a QC step reads, like data.path, are relative to the YAML file, so a shipped
        # config finds them from any working directory.
        for key in QC_FILE_KEYS:
            if isinstance(step.get(key), str):
                path = (base / step[key]).expanduser()
                if not path.exists():
                    raise ConfigError(f"data.qc[{i}].{key}: file not found: {path} (relative paths are read from "
                                      "the config file's folder).")
                step[key] = str(path)
    for i, component in enumerate(config["model"]["components"]):
        if not isinstance(component, dict):
            raise ConfigError(f"model.components[{i}]: expected a mapping, got {type(component).__name__}.")
        for key in ("name", "modalities"):
            if key not in component:
                raise ConfigError(f"model.components[{i}].{key}: required.")
    training = config["training"]
    if training["epochs"] < 1:
        raise ConfigError("training.epochs: must be at least 1.")
    if training["batch_size"] < 1:
        raise ConfigError("training.batch_size: must be at least 1.")
    if not 0 <= training["validation_split"] < 1:
        raise ConfigError("training.validation_split: must be in [0, 1).")
    plateau = training["reduce_lr"] or {}
    for key, value in plateau.items():
        if key not in PLATEAU_KEYS:
            raise ConfigError(f"training.reduce_lr.{key}: unknown key; allowed: {sorted(PLATEAU_KEYS)}.")
        if not isinstance(value, PLATEAU_KEYS[key]) or isinstance(value, bool):
            # YAML reads 1e-5 (no dot) as a string, which would fail only when the rate first falls.
            raise ConfigError(f"training.reduce_lr.{key}: expected {_type_names(PLATEAU_KEYS[key])}, got "
                              f"{type(value).__name__} ({value!r}); YAML needs a dot for a float, e.g. 1.0e-5.")
    if not 0 < plateau.get("factor", PLATEAU_DEFAULTS["factor"]) < 1:
        raise ConfigError("training.reduce_lr.factor: must be in (0, 1).")
    if config["output"]["embedding"] not in ("umap", "pca"):
        raise ConfigError("output.embedding: must be 'umap' or 'pca'.")
    for module in config["plugins"]:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ConfigError(f"plugins: cannot import {module!r}: {error}.") from None


def validate_config(config: dict[str, Any], base: str | Path = ".") -> dict[str, Any]:
    """Fill defaults and check ``config``; raise :class:`ConfigError` naming the key.

    Relative paths resolve against ``base`` (the YAML file's folder). ``plugins``
    are imported, so the classes they register can be named in the config.
    """
    result = _merge(SCHEMA, config, "")
    _check_semantics(result, Path(base))
    return result


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a YAML file, apply dotted-key ``overrides`` (e.g. ``{"training.epochs": 3}``), validate."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}.")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, last = dotted.split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        if dotted == "data.path":
            for other in DATA_SOURCES:
                node.pop(other, None)
            value = str(Path(value).resolve())
        node[last] = value
    return validate_config(raw, base=path.parent)
