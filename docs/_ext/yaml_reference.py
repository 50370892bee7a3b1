"""``.. yaml-reference::``: the YAML keys of a run, rendered from the package at build time.

Keys, types and defaults come from :data:`cavachon_like.config.schema.SCHEMA`, component
keys from :data:`cavachon_like.model.specs.COMPONENT_KEYS` (defaults from
:class:`~cavachon_like.module.Component`'s signature), and the names a file may use from the
package's registries (every module-level :class:`~cavachon_like._registry.Registry`, found by
walking the package), so none of them is written by hand. Only the one-line descriptions
below are; a key without a description, or a description of a key that no longer exists,
is a build warning, so the page cannot fall behind the schema unnoticed.
"""
from __future__ import annotations

import ast
import functools
import importlib
import inspect
import pkgutil
from pathlib import Path
from typing import Any

import yaml
from package_pages import parse_rst
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

LOGGER = logging.getLogger(__name__)
#: Dotted key -> what it does (rst). Component keys are ``model.components[].<key>``, modality
#: keys ``data.modalities.<name>.<key>``.
DESCRIPTIONS = {
    "seed": "One seed for weights, noise, shuffling and the validation split (``--seed`` replaces it).",
    "plugins": "Modules imported first: the classes they define with an ``alias`` can then be named "
               "in this file.",
    "data.path": "An ``.h5mu`` file. Relative paths here resolve against the YAML file's folder; "
                 "``--data`` replaces whichever source the file sets.",
    "data.h5ad": "One ``.h5ad`` file per modality: ``{rna: rna.h5ad, atac: atac.h5ad}``.",
    "data.tenx": "A 10x output folder, or ``{modality: folder}``; modalities are named by feature type "
                 "(:data:`~cavachon_like.data.FEATURE_TYPES`).",
    "data.simulate": "Keyword arguments of :func:`cavachon_like.data.simulate` (paired data with a known "
                     "DAG); its ``seed`` defaults to the top-level ``seed``.",
    "data.join": "``strict``: cells must match across modalities; ``inner``: keep the cells they share; "
                 "``outer``: keep every cell (mosaic data).",
    "data.backed": "For ``data.path`` and ``data.h5ad``: ``true`` leaves the count matrices on disk and reads row blocks as "
                   "training needs them; ``auto`` does so when they would fill over a quarter of the machine's "
                   "memory (:func:`~cavachon_like.data.read_h5mu`).",
    "data.label_key": "obs column of cell annotations: colours ``latent.png``, and ``analyze`` compares "
                      "clusters with it.",
    "data.modalities": "Per modality, its likelihood and batch columns (`Modality keys`_).",
    "data.qc": "QC steps, applied in order (`QC steps`_).",
    "data.modalities.<name>.likelihood": "A likelihood name (`Likelihoods`_); default by modality name "
                                         "(:data:`~cavachon_like.data.DEFAULT_LIKELIHOODS`).",
    "data.modalities.<name>.batch_key": "obs column(s) of batch covariates, one-hot encoded for the "
                                        "decoders.",
    "model.training": "Training mode (`Training modes`_).",
    "model.progressive_epochs": "Epochs over which a component with parents is blended in (0: off).",
    "model.pretrain_epochs": "VaDE pre-training epochs per stage before the mixture prior is fitted to the "
                             "latents (0: the paper's random start).",
    "model.prior_em_iterations": "EM iterations of each stage's mixture prior on the posteriors as the "
                                 "stage ends (0: off).",
    "model.kl_warmup_epochs": "Epochs over which the KL weight ramps from 0 to 1 at the start of each "
                              "stage's ELBO phase (scMM).",
    "model.components": "One mapping per component (`Component keys`_); required.",
    "model.components[].name": "The component's name: its latents are ``z_<name>`` and ``z_hat_<name>``, "
                               "its clusters ``cluster_<name>``.",
    "model.components[].modalities": "The modalities its latent explains; several share one joint latent.",
    "model.components[].parents": "Components (or modalities, meaning their components) whose latents "
                                  "condition this one: the edges of the DAG.",
    "model.components[].latent_dim": "Dimension of the latent ``z``.",
    "model.components[].conditioned_on": "``z_hat``: all ancestors (Eq. 2); ``z``: the parents only "
                                         "(Appendix C).",
    "model.components[].posterior": "How a joint latent combines its modalities (`Posteriors`_).",
    "model.components[].sampled_zeros": "For ``bernoulli`` modalities (``posterior: concat`` or ``poe``): "
                                         "fraction of the features at which training steps evaluate the decoder; "
                                         "the zeros' terms are estimated from them, unbiased, the non-zeros' are exact.",
    "model.components[].expert_alignment": "For ``posterior: poe`` or ``moe``: weight of the symmetric-KL "
    "penalty between the experts of the modalities a cell has (MultiVI; mosaic data). Default 0.",
    "model.components[].quantizer": "Options of the codebook for ``posterior: vq`` (see "
                                     ":class:`~cavachon_like.module.Component`).",
    "model.components[].representation": "Options of the per-cell latent table for ``posterior: "
                                          "representation`` (multiDGD; ``n_cells`` comes from the data; "
                                          "``learning_rate``, ``beta_1``, ``beta_2`` of its per-row Adam; "
                                          "``covariate_dim``: multiDGD's covariate model, a supervised "
                                          "representation of this size per batch column that the decoders read "
                                          "instead of the batch one-hot, default 0: off).",
    "model.components[].prior": "A prior name or ``{class: name, **options}`` (`Priors`_); ``null``: the "
                                "mixture of Gaussians.",
    "model.components[].n_clusters": "K of the mixture prior; default ``2 * latent_dim + 1``.",
    "model.components[].encoder": "An encoder name or ``{class: name, **options}`` (`Encoders`_); "
                                  "``null``: an MLP whose widths follow the number of cells. For ``poe``, "
                                  "``moe`` and ``vq``, keyed by modality names it gives each expert its own "
                                  "(``{rna: {units: [500, 500]}, atac: {units: [100, 100]}}``).",
    "model.components[].decoder": "A decoder name or ``{class: name, **options}`` (`Decoders`_), used for "
                                  "every modality of the component, or keyed by modality names, one each.",
    "model.components[].hierarchical_encoder": "How the parents' latents and this one's combine into "
                                               "``z_hat`` (`Hierarchical encoders`_).",
    "model.components[].preprocessor": "How counts become encoder input (`Preprocessors`_); the default "
                                       "follows each modality's likelihood.",
    "training.epochs": "Epochs per stage (``--epochs`` replaces it).",
    "training.batch_size": "Cells per batch.",
    "training.min_pretrain_steps": "On small data, `cavachon-like train` raises `pretrain_epochs` so that "
                                "pre-training takes at least this many optimiser steps (0: exactly "
                                "`pretrain_epochs`).",
    "training.learning_rate": "Adam's learning rate.",
    "training.validation_split": "Fraction of the cells held out for validation, in [0, 1).",
    "training.reduce_lr": "Multiply the learning rate by ``factor`` when the monitored loss has not improved for "
                          "``patience`` epochs (``keras.callbacks.ReduceLROnPlateau``'s options, on top of "
                          "``factor: 0.5``, ``patience: 3``, ``min_lr: 1.0e-5`` and the early-stopping monitor); "
                          "every phase of the fit starts again at ``learning_rate``. ``{}`` for those settings, "
                          "``null`` (default) for a constant rate.",
    "training.early_stopping": "Options of ``keras.callbacks.EarlyStopping``, on top of ``patience: 10``, "
                               "``restore_best_weights: true`` and ``monitor: val_loss`` (``loss`` without "
                               "validation cells); ``null`` disables it.",
    "training.tensorboard": "Write TensorBoard logs to ``OUT/tensorboard``.",
    "training.verbose": "Keras' ``verbose`` of ``fit``: ``auto``, 0, 1 or 2.",
    "output.embedding": "``umap`` or ``pca``: the 2-D embedding of ``latent.png``.",
    "output.color_by": "More obs columns to colour ``latent.png`` by.",
}


def _types(types: tuple[type, ...]) -> str:
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)


def _yaml_text(value: Any) -> str:
    """``value`` as it would be written in YAML (flow style, one line)."""
    if isinstance(value, tuple):
        value = list(value)
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def _yaml(value: Any) -> str:
    return f"``{_yaml_text(value)}``"


def _cell(text: str) -> str:
    return text if text else "\u2014"


def _table(header: list[str], rows: list[list[str]], widths: str | None = None) -> list[str]:
    lines = [".. list-table::", "   :header-rows: 1"]
    if widths:
        lines.append(f"   :widths: {widths}")
    lines.append("")
    for row in [header, *rows]:
        lines.append(f"   * - {_cell(row[0])}")
        lines += [f"     - {_cell(cell)}" for cell in row[1:]]
    return [*lines, ""]


def _heading(text: str, underline: str) -> list[str]:
    return [text, underline * len(text), ""]


def _parameters(cls: type, owned: set[str]) -> str:
    """The constructor's parameters a YAML entry may set, as ``name: default``."""
    parts = []
    for name, parameter in inspect.signature(cls).parameters.items():
        if parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL) or name in owned:
            continue
        if parameter.default is parameter.empty:
            parts.append(f"``{name}`` (required)")
            continue
        parts.append(f"``{name}: {_yaml_text(parameter.default)}``")
    return ", ".join(parts)


def registries() -> dict[str, tuple[str, Any]]:
    """Every module-level registry of the package by its kind, with its shortest dotted name
    (found by walking the package, so a new registry is listed too)."""
    import cavachon_like
    from cavachon_like._registry import Registry

    found: dict[int, list[str]] = {}
    objects: dict[int, Any] = {}
    for info in pkgutil.walk_packages(cavachon_like.__path__, "cavachon_like."):
        if info.name.rpartition(".")[2].startswith("_") or info.name.endswith(".cli"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, Registry):
                found.setdefault(id(value), []).append(f"{info.name}.{name}")
                objects[id(value)] = value
    return {objects[key].kind: (min(names, key=lambda n: (n.count("."), n)), objects[key])
            for key, names in found.items()}


@functools.cache
def component_arguments() -> dict[str, set[str]]:
    """Registry variable name -> the keyword arguments the package passes itself to
    ``build_from_spec(REGISTRY, spec, ...)``; a YAML spec must not set those.

    Read from the source (every call in the package), so a new argument shows up here.
    """
    import cavachon_like

    owned: dict[str, set[str]] = {}
    for path in Path(cavachon_like.__file__).parent.rglob("*.py"):
        source = path.read_text()
        if "build_from_spec(" not in source:
            continue
        for node in ast.walk(ast.parse(source)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "build_from_spec"
                    and node.args and isinstance(node.args[0], ast.Name)):
                owned.setdefault(node.args[0].id, set()).update(k.arg for k in node.keywords if k.arg)
    return owned


class YAMLReference(SphinxDirective):
    """Render the YAML reference (see the module docstring)."""

    def run(self):
        from cavachon_like.config import schema
        from cavachon_like.model.specs import COMPONENT_KEYS
        from cavachon_like.module import Component
        from cavachon_like.module.options import POSTERIORS
        from cavachon_like.train import MODES

        described: set[str] = set()

        def describe(key: str) -> str:
            described.add(key)
            if key not in DESCRIPTIONS:
                LOGGER.warning("YAML key %r has no description; add one to DESCRIPTIONS in %s", key, __file__,
                               location=self.get_location())
            return DESCRIPTIONS.get(key, "")

        lines = [
            "Every key of a run configuration with its type and default, read from the package as "
            "these pages were built. Unknown keys, wrong types and missing files are errors that name "
            "the key. Give exactly one data source: "
            + ", ".join(f"``data.{s}``" for s in schema.DATA_SOURCES) + ".",
            "",
        ]
        file_keys = getattr(schema, "QC_FILE_KEYS", ())
        if file_keys:
            lines += ["QC options naming files (" + ", ".join(f"``{k}``" for k in file_keys)
                      + ") resolve against the YAML file's folder, like ``data.path``.", ""]
        top = [[f"``{key}``", _types(rule[0]), _yaml(rule[1]), describe(key)]
               for key, rule in schema.SCHEMA.items() if not isinstance(rule, dict)]
        lines += _heading("Top level", "-") + _table(["Key", "Type", "Default", "Description"], top, "15 12 15 58")
        for section, rules in schema.SCHEMA.items():
            if not isinstance(rules, dict):
                continue
            rows = []
            for key, (types, default) in rules.items():
                required = default is None and type(None) not in types
                rows.append([f"``{key}``", _types(types), "required" if required else _yaml(default),
                             describe(f"{section}.{key}")])
            lines += _heading(f"``{section}``", "-") + _table(["Key", "Type", "Default", "Description"], rows,
                                                              "15 12 15 58")

        lines += _heading("Modality keys", "-")
        lines += ["Keys of each entry of ``data.modalities``, e.g. ``rna: {likelihood: zinb, batch_key: batch}``.",
                  ""]
        rows = [[f"``{key}``", _types(types), describe(f"data.modalities.<name>.{key}")]
                for key, types in schema.MODALITY_SPEC_KEYS.items()]
        lines += _table(["Key", "Type", "Description"], rows, "15 15 70")

        lines += _heading("Component keys", "-")
        lines += [("Keys of each entry of ``model.components``; checked by "
                   ":class:`~cavachon_like.model.CAVACHON` when it is built."), ""]
        signature = inspect.signature(Component).parameters
        rows = []
        for key in sorted(COMPONENT_KEYS, key=lambda k: (k != "name", k != "modalities", k)):
            if key in ("name", "modalities"):
                default = "required"
            elif key in signature and signature[key].default is not inspect.Parameter.empty:
                default = _yaml(signature[key].default)
            else:
                default = ""
            rows.append([f"``{key}``", default, describe(f"model.components[].{key}")])
        lines += _table(["Key", "Default", "Description"], rows, "20 15 65")

        stale = sorted(set(DESCRIPTIONS) - described)
        for key in stale:
            LOGGER.warning("DESCRIPTIONS in %s describes %r, which is no longer a YAML key", __file__, key,
                           location=self.get_location())

        lines += _heading("Registered names", "-")
        lines += [("Names a file may use, as registered when the package was imported. A subclass that "
                   "sets ``alias`` joins its kind's registry when its module is imported (list the "
                   "module under ``plugins``)."), ""]
        lines += self._registered(registries(), POSTERIORS, MODES)
        return parse_rst(self.state, "\n".join(lines), "<yaml-reference>")

    @staticmethod
    def _registered(found: dict[str, Any], posteriors: tuple[str, ...], modes: tuple[str, ...]) -> list[str]:
        titles = {"likelihood": "Likelihoods", "prior": "Priors", "encoder": "Encoders", "decoder": "Decoders",
                  "hierarchical encoder": "Hierarchical encoders", "preprocessor": "Preprocessors",
                  "QC step": "QC steps"}
        lines: list[str] = []
        for kind in sorted(found, key=lambda k: (k not in titles, list(titles).index(k) if k in titles else 0, k)):
            dotted, registry = found[kind]
            lines += _heading(titles.get(kind, kind.capitalize() + "s"), "~")
            lines += [f"From :data:`{dotted}`.", ""]
            if kind == "likelihood":
                rows = [[f"``{name}``", f":class:`~{cls.__module__}.{cls.__qualname__}`", f"``{cls.support}``",
                         ", ".join(f"``{p}``" for p in getattr(cls, "parameters", ())),
                         f"``{cls.input_transform}``"]
                        for name, cls in ((n, registry.get(n)) for n in registry.names())]
                lines += _table(["Name", "Class", "Support", "Decoder heads", "Encoder input"], rows)
                continue
            owned = component_arguments().get(dotted.rpartition(".")[2], set())
            header = "Keys beside ``step``" if kind == "QC step" else "Options (keys beside ``class``)"
            rows = [[f"``{name}``", f":class:`~{cls.__module__}.{cls.__qualname__}`", _parameters(cls, owned)]
                    for name, cls in ((n, registry.get(n)) for n in registry.names())]
            lines += _table(["Name", "Class", header], rows, "20 25 55")
            if owned:
                lines += ["Set by the component, not in YAML: " + ", ".join(f"``{k}``" for k in sorted(owned)) + ".",
                          ""]
        lines += _heading("Posteriors", "~")
        lines += ["``posterior`` of a component: " + ", ".join(f"``{p}``" for p in posteriors)
                  + " (see :class:`~cavachon_like.module.Component`).", ""]
        lines += _heading("Training modes", "~")
        lines += ["``model.training``: " + ", ".join(f"``{m}``" for m in modes)
                  + " (see :func:`~cavachon_like.train.training_plan`).", ""]
        return lines


def setup(app):
    """Register the directive with Sphinx."""
    app.add_directive("yaml-reference", YAMLReference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
