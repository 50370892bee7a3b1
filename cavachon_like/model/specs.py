"""The model's modality and component specs: validation, data-scaled defaults, building components."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data import MultiModality
from ..data.bins import chromosome_boundaries
from ..data.depth import library_size_specs
from ..data.groups import name_examples
from ..errors import InputError
from ..module import Component, per_modality, split_spec
from ..module.component import DEFAULT_LATENT_DIM

COMPONENT_KEYS = {
    "name",
    "modalities",
    "parents",
    "latent_dim",
    "conditioned_on",
    "posterior",
    "prior",
    "n_clusters",
    "encoder",
    "decoder",
    "hierarchical_encoder",
    "preprocessor",
    "quantizer",
    "representation",
    "expert_alignment",
    "sampled_zeros",
}
MODALITY_KEYS = {"likelihood", "n_features", "batch_key", "batch_categories", "median_library_size",
                 "library_size_from"}

#: Bounds of the first encoder layer's width chosen from the number of cells.
MIN_WIDTH, MAX_WIDTH = 256, 512
#: Cells per unit of the first layer's width.
CELLS_PER_UNIT = 64
#: The narrowest hidden layer (the paper's Table S1 ends its encoder at 128).
BOTTLENECK = 128


def check_keys(kind: str, name: str, spec: Mapping[str, Any], allowed: set[str]) -> None:
    """Raise a ValueError naming the keys of ``spec`` (a ``kind`` called ``name``) outside ``allowed``."""
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ValueError(f"{kind} {name!r}: unknown key(s) {unknown}; allowed: {sorted(allowed)}.")


def normalize_modalities(modalities: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Modality specs with defaults filled in; raises naming the modality and key."""
    specs = {}
    for name, spec in modalities.items():
        check_keys("modality", name, spec, MODALITY_KEYS)
        for key in ("likelihood", "n_features"):
            if key not in spec:
                raise ValueError(f"modality {name!r}: missing {key!r}.")
        batch_key = spec.get("batch_key") or []
        batch_key = [batch_key] if isinstance(batch_key, str) else list(batch_key)
        categories = {str(k): [str(v) for v in vals] for k, vals in (spec.get("batch_categories") or {}).items()}
        missing = [k for k in batch_key if k not in categories]
        if missing:
            raise ValueError(f"modality {name!r}: batch_categories lacks the batch column(s) {missing}.")
        if int(spec["n_features"]) < 1:
            raise ValueError(f"modality {name!r} has no features (QC may have removed them all); loosen the QC "
                             "thresholds or leave the modality out of the components.")
        specs[name] = {
            "likelihood": spec["likelihood"],
            "n_features": int(spec["n_features"]),
            "batch_key": batch_key,
            "batch_categories": {k: categories[k] for k in batch_key},
            # recorded from the training data (from_data); log1p predictions draw counts at it
            **({"median_library_size": float(spec["median_library_size"])}
               if spec.get("median_library_size") is not None else {}),
            # and how the other modalities' library sizes predict it (data.depth.library_size_fits)
            **({"library_size_from": _library_size_from(name, spec["library_size_from"])}
               if spec.get("library_size_from") else {}),
        }
    return specs


def _library_size_from(name: str, fits: Any) -> dict[str, dict[str, float]]:
    """``fits`` checked: a mapping of source modalities to fits with every number a fit has."""
    keys = ("intercept", "slope", "sd", "r", "n_cells")
    if not isinstance(fits, Mapping) or not all(isinstance(f, Mapping) and all(k in f for k in keys)
                                                for f in fits.values()):
        raise ValueError(f"modality {name!r}: library_size_from must map source modalities to fits with keys "
                         f"{list(keys)}, got {fits!r}.")
    return {str(source): {k: float(fit[k]) for k in keys} for source, fit in fits.items()}


def check_components(components: Sequence[dict[str, Any]], modalities: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Component specs by name; raises on bad names, unknown keys or modalities."""
    if not components:
        raise ValueError("a CAVACHON model needs at least one component.")
    by_name: dict[str, dict[str, Any]] = {}
    for spec in components:
        name = spec.get("name")
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"component name must be an identifier-like string, got {name!r}.")
        check_keys("component", name, spec, COMPONENT_KEYS)
        if name in by_name:
            raise ValueError(f"component name {name!r} is used twice.")
        mods = spec.get("modalities")
        if isinstance(mods, str):
            spec["modalities"] = mods = [mods]
        if not mods:
            raise ValueError(f"component {name!r}: 'modalities' must list at least one modality.")
        unknown = [m for m in mods if m not in modalities]
        if unknown:
            raise ValueError(
                f"component {name!r} uses modality {unknown} that the data does not have; "
                f"available: {sorted(modalities)}."
            )
        posterior = spec.get("posterior", "concat")
        if posterior not in ("concat", "representation") and len(mods) < 2:
            raise ValueError(f"component {name!r}: posterior {posterior!r} combines one expert per modality, but the "
                             f"component has one modality ({mods[0]!r}); use posterior: concat, or list the "
                             "modalities the experts should share in one component.")
        by_name[name] = spec
    return by_name


def check_feature_counts(modality_specs: Mapping[str, Mapping[str, Any]], data: Any, modalities: Sequence[str]) -> None:
    """Raise a ValueError naming the first of ``modalities`` whose feature count in ``data`` differs from training."""
    for m in modalities:
        expected = int(modality_specs[m]["n_features"])
        if data.mod[m].n_vars != expected:
            raise ValueError(f"modality {m!r} has {data.mod[m].n_vars} features but the model was trained on "
                             f"{expected}; apply the training run's QC first.")


def default_units(n_cells: int) -> tuple[int, ...]:
    """Encoder widths for ``n_cells`` cells: halving from the first layer down to 128.

    The first layer is ``n_cells / 64`` rounded down to a power of two, between 256
    and 512: 256-128 up to about 32,000 cells, 512-256-128 above. Narrower than the
    paper's 1024-512-256-128 (Table S1), which on SNARE-seq's 10,000 cells let the
    ATAC posterior collapse onto the prior (KL -> 0) during the KL warm-up, where
    256-128 learned a latent with 20-NN cell-type agreement 0.49; issue 8 also
    reports it overfitting 500-cell data sets. scvi-tools' defaults are narrower
    still (one layer of 128).
    """
    width = 2 ** int(math.floor(math.log2(max(n_cells // CELLS_PER_UNIT, 1))))
    width = min(max(width, MIN_WIDTH), MAX_WIDTH)
    units = [width]
    while units[-1] > BOTTLENECK:
        units.append(units[-1] // 2)
    return tuple(units)


def with_default_units(spec: str | dict | None, units: Sequence[int]) -> str | dict | None:
    """``spec`` with ``units`` filled in when it is the built-in MLP and sets none."""
    alias, kwargs = split_spec(spec, "mlp")
    if alias != "mlp" or "units" in kwargs:
        return spec
    return {**({} if spec is None or isinstance(spec, str) else dict(spec)), "units": list(units)}


def chromosome_sizes_of(data: Any, modalities: Sequence[str]) -> list[int] | None:
    """Bins per chromosome of ``modalities`` when they are binned on the genome (a ``chrom`` var
    column, as the ``bin_genome`` QC step writes) and share their bins; else None."""
    frames = [data.mod[m].var for m in modalities]
    if any("chrom" not in var.columns for var in frames):
        return None
    chroms = [var["chrom"].astype(str).to_numpy() for var in frames]
    if any(len(c) != len(chroms[0]) or (c != chroms[0]).any() for c in chroms[1:]):
        return None  # not aligned: the conv encoder says so when it sees the sizes
    starts = chromosome_boundaries(frames[0]).to_numpy()
    return np.diff(np.r_[starts, len(frames[0])]).astype(int).tolist()


def with_chromosome_sizes(spec: str | dict | None, sizes: Sequence[int] | None) -> str | dict | None:
    """A ``conv1d`` module ``spec`` with the data's ``chromosome_sizes`` filled in when it sets none,
    so that encoder and decoder pad the same chromosomes."""
    alias, kwargs = split_spec(spec, "mlp")
    if alias != "conv1d" or sizes is None or "chromosome_sizes" in kwargs:
        return spec
    return {**({"class": alias} if isinstance(spec, str) else dict(spec)), "chromosome_sizes": list(sizes)}


def with_module_defaults(spec: str | dict | None, modalities: Sequence[str], units: Sequence[int],
                         sizes: Sequence[int] | None, kind: str) -> str | dict | None:
    """An encoder or decoder ``spec`` with the data's defaults (:func:`with_default_units`,
    :func:`with_chromosome_sizes`) filled in, per modality when it is keyed by modality names."""
    split = per_modality(spec, modalities, kind)
    if split is None:
        return with_chromosome_sizes(with_default_units(spec, units), sizes)
    return {m: with_chromosome_sizes(with_default_units(s, units), sizes) for m, s in split.items()}


def check_data(modality_specs: Mapping[str, Mapping[str, Any]], data: Any, supports: Mapping[str, str]) -> None:
    """Raise one error listing every way ``data`` does not fit the modality specs of a model,
    then check the values against each modality's likelihood ``supports``."""
    errors = []
    for m, spec in modality_specs.items():
        if m not in data.mod:
            errors.append(f"the model needs modality {m!r}; the data has {sorted(data.mod)}.")
            continue
        n = data.mod[m].n_vars
        if n != spec["n_features"]:
            errors.append(f"modality {m!r} has {n} features; the model was built for {spec['n_features']}.")
        missing = [k for k in spec["batch_key"] if k not in data.mod[m].obs]
        if missing:
            errors.append(f"modality {m!r} lacks the batch column(s) {missing} in .obs.")
    if errors:
        raise ValueError("data does not match the model:\n  - " + "\n  - ".join(errors))
    data.validate(supports)


def check_measured(components: Mapping[str, Any], data: Any) -> None:
    """Raise an :class:`~cavachon_like.errors.InputError` when mosaic ``data`` (cells that lack a
    modality) does not fit how ``components`` encode: one encoder over a component's modalities
    (``concat``, one modality alone) needs them in every cell, and a child needs some modality
    of each parent wherever it is measured. Experts (``poe``, ``moe``, ``vq``) and learned
    representations take any subset."""
    flags = {m: data.mod[m].measured for m in data.mod}
    errors = []
    for name, component in components.items():
        mods = [m for m in component.modalities if m in flags]
        if not mods:
            continue
        some = np.any([flags[m] for m in mods], axis=0)
        if not component.takes_subsets:
            lacking = ~np.all([flags[m] for m in mods], axis=0)
            if lacking.any():
                errors.append(
                    f"component {name!r} (posterior: {component.posterior}) encodes {mods} with one encoder, and "
                    f"{int(lacking.sum())} cells lack {'one of them' if len(mods) > 1 else 'it'} (e.g. "
                    f"{name_examples(data.obs_names[lacking])}). Put the modalities in one component with posterior: "
                    "poe or moe (configs/poe.yaml, configs/scmm.yaml), which encode any subset, or keep only the "
                    "cells that have them."
                )
        for parent in component.parents:
            held = [m for m in components[parent].modalities if m in flags]
            orphans = some & ~np.any([flags[m] for m in held], axis=0) if held else np.zeros_like(some)
            if orphans.any():
                errors.append(
                    f"component {name!r} is conditioned on its parent {parent!r}, but {int(orphans.sum())} cells "
                    f"measured in {mods} have none of {parent!r}'s modalities {held} (e.g. "
                    f"{name_examples(data.obs_names[orphans])}); remove them or make the components one joint "
                    "component with posterior: poe or moe."
                )
    if errors:
        raise InputError("mosaic data (cells lacking a modality) does not fit the model:\n  - " + "\n  - ".join(errors))


def with_absent_modalities(components: Mapping[str, Any], modality_specs: Mapping[str, Mapping[str, Any]],
                           data: Any) -> Any:
    """``data`` with the model's modalities it lacks added as measured in no cell, where the
    components holding them take any subset of their modalities (experts, learned
    representations), so that e.g. a joint latent is encoded from ATAC alone; else ``data``
    itself (:func:`check_data` then names what is missing)."""
    absent = [m for m in modality_specs if m not in data.mod]
    subsets = [c for c in components.values() if c.takes_subsets]
    if not absent or not all(any(m in c.modalities for c in subsets) for m in absent):
        return data
    if not any(m in data.mod for c in subsets for m in c.modalities):
        return data  # nothing to encode the cells from
    empty = {}
    for m in absent:
        spec = modality_specs[m]
        obs = pd.DataFrame({column: pd.Series(dtype=object) for column in spec["batch_key"]},
                           index=pd.Index([], dtype=object))
        empty[m] = ad.AnnData(sp.csr_matrix((0, int(spec["n_features"])), dtype=np.float32), obs=obs,
                              var=pd.DataFrame(index=[f"{m}:unmeasured_{i}" for i in range(int(spec["n_features"]))]))
    return MultiModality({**data.mod, **empty}, join="outer",
                         likelihoods={m: modality_specs[m]["likelihood"] for m in absent},
                         batch_key={m: modality_specs[m]["batch_key"] for m in absent})


def modality_specs_of(data: Any, components: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The specs (likelihood, sizes, batch encoding) of the modalities ``components`` use, from ``data``."""
    used = {m for c in components for m in ([c["modalities"]] if isinstance(c["modalities"], str) else c["modalities"])}
    missing = sorted(used - set(data.mod))
    if missing:
        raise ValueError(f"components use modalities {missing} that the data lacks; it has {sorted(data.mod)}.")
    categories = data.batch_categories()
    library = library_size_specs(data, sorted(m for m in data.mod if m in used))
    return {
        m: {
            "likelihood": data.modality(m).likelihood,
            "n_features": data.mod[m].n_vars,
            "batch_key": data.modality(m).batch_key,
            "batch_categories": categories[m],
            **library[m],
        }
        for m in data.mod
        if m in used
    }


def make_component(name: str, by_name: Mapping[str, dict[str, Any]], modality_specs: Mapping[str, Mapping[str, Any]],
                   parents: list[str], seed: int | None) -> Component:
    """The built :class:`~cavachon_like.module.Component` of ``by_name[name]``; a bad module spec
    raises a ValueError naming the component."""
    spec = by_name[name]
    prior = spec.get("prior")
    if spec.get("n_clusters") is not None:
        prior = {"class": "mixture_gaussian", **({"class": prior} if isinstance(prior, str) else (prior or {}))}
        prior["n_clusters"] = int(spec["n_clusters"])
    try:
        component = Component(
            modalities={
                m: {
                    "likelihood": modality_specs[m]["likelihood"],
                    "n_features": modality_specs[m]["n_features"],
                    "n_batch": sum(len(v) for v in modality_specs[m]["batch_categories"].values()),
                    "batch_columns": {k: len(v) for k, v in modality_specs[m]["batch_categories"].items()},
                }
                for m in spec["modalities"]
            },
            latent_dim=int(spec.get("latent_dim", DEFAULT_LATENT_DIM)),
            parents=parents,
            parent_dims=[int(by_name[p].get("latent_dim", DEFAULT_LATENT_DIM)) for p in parents],
            conditioned_on=spec.get("conditioned_on", "z_hat"),
            posterior=spec.get("posterior", "concat"),
            prior=prior,
            encoder=spec.get("encoder"),
            decoder=spec.get("decoder"),
            hierarchical_encoder=spec.get("hierarchical_encoder"),
            preprocessor=spec.get("preprocessor"),
            quantizer=spec.get("quantizer"),
            representation=spec.get("representation"),
            expert_alignment=float(spec.get("expert_alignment", 0.0)),
            sampled_zeros=spec.get("sampled_zeros"),
            seed=seed,
            name=name,
        )
        # Built now, not on the first call: loading weights and summary() need them all.
        component.build(**component.build_shapes())
    except (TypeError, ValueError, KeyError) as error:  # a bad module spec: say which component has it
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        raise ValueError(f"component {name!r}: {message}") from error
    return component
