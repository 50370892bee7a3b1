"""``cavachon-like analyze``: every analysis of a training run, written as CSV tables and PNG figures."""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .attribution import attribution_by_cluster, conditional_attribution
from .clustering import (
    DEFAULT_K,
    cluster_assignments,
    cluster_summary,
    degenerate_clustering,
    neighbourhood_table,
)
from .differential import differential_analysis
from .enrichment import gsea
from .metrics import evaluate_latent

logger = logging.getLogger(__name__)


@dataclass
class AnalysisOptions:
    """What :func:`analyze_run` computes; every field has a CLI flag of the same name.

    Attributes
    ----------
    label_key
        Obs column of annotations (default: the run's ``data.label_key``).
    groupby
        Obs column whose groups are compared (default: ``label_key``); None and no
        label skips the differential analysis.
    groups
        Groups compared with the rest (or with ``reference``); default every group.
    reference
        Compare against this group instead of all other cells.
    modalities
        Modalities of the differential analysis; default those modelled as counts
        with a library size (genes), since GSEA needs gene symbols.
    n_samples, delta
        Monte Carlo pairs and log2 fold-change margin of the differential analysis.
    gene_sets
        GMT file for GSEA (skipped without one); ``upper_case`` maps mouse symbols
        to human sets; ``permutations`` per GSEA.
    steps, baseline
        Integrated-gradient steps and baseline of the conditional attribution.
    attribution
        Compute conditional attribution for components with parents.
    k
        Neighbourhood sizes of the neighbourhood table.
    embedding
        ``"umap"`` or ``"pca"`` for the latent plots.
    seed
        Seeds sampling, k-means, GSEA permutations and embeddings (default: the run's).
    """

    label_key: str | None = None
    groupby: str | None = None
    groups: Sequence[str] | None = None
    reference: str | None = None
    modalities: Sequence[str] | None = None
    n_samples: int = 5000
    delta: float = 0.0
    gene_sets: str | None = None
    upper_case: bool = False
    permutations: int = 1000
    steps: int = 50
    baseline: str = "mean"
    attribution: bool = True
    k: Sequence[int] = field(default_factory=lambda: list(DEFAULT_K))
    embedding: str = "umap"
    seed: int | None = None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "group"


def _check(model: Any, data: Any, options: AnalysisOptions) -> None:
    """Reject unknown columns, groups, modalities and files before any computation."""
    for key in (options.label_key, options.groupby):
        if key is not None:
            data.obs_column(key)
    groupby = options.groupby or options.label_key
    if groupby is not None:
        present = set(data.obs_column(groupby).astype(str))
        wanted = list(options.groups or []) + ([options.reference] if options.reference else [])
        unknown = [g for g in wanted if g not in present]
        if unknown:
            raise ValueError(f"obs column {groupby!r} has no group {unknown}; its groups: {sorted(present)}.")
    unknown = [m for m in options.modalities or [] if m not in model.modality_names]
    if unknown:
        raise ValueError(f"the model has no modality {unknown}; it has {model.modality_names}.")
    if options.gene_sets is not None and not Path(options.gene_sets).is_file():
        raise FileNotFoundError(f"gene set file {options.gene_sets} does not exist.")
    if options.baseline not in ("mean", "zero"):
        raise ValueError(f"baseline must be 'mean' or 'zero', got {options.baseline!r}.")


def load_run(run_dir: str | Path) -> tuple[Any, Any, dict[str, Any]]:
    """The trained model, its annotated data and the run's configuration from a ``train`` folder."""
    import keras

    from ..data import MultiModality

    run_dir = Path(run_dir)
    missing = [name for name in ("result.h5mu", "model.keras") if not (run_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{run_dir} lacks {missing}; point analyze at a folder written by `cavachon-like train`.")
    data = MultiModality.from_h5mu(run_dir / "result.h5mu")
    model = keras.saving.load_model(run_dir / "model.keras")
    run = data.uns.get("cavachon_like", {}).get("run")
    config = json.loads(run)["config"] if isinstance(run, str) else {}
    if not any(k.startswith("z_") for k in data.obsm):
        model.annotate(data)
    return model, data, config


def _write(table: pd.DataFrame, path: Path, written: list[Path], index: bool = True) -> None:
    table.to_csv(path, index=index)
    written.append(path)


def _save(figure: Any, path: Path, written: list[Path]) -> None:
    import matplotlib.pyplot as plt

    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    written.append(path)


def analyze(model: Any, data: Any, out: str | Path, options: AnalysisOptions | None = None) -> list[Path]:
    """Run every analysis of ``model`` on ``data`` and write the tables and figures to ``out``.

    Returns the paths written. Writes, per component ``c`` with a mixture prior,
    ``clusters_<c>.csv`` (and ``cluster_summary_<c>.csv`` with labels); per latent,
    ``neighbourhood_<latent>.csv`` and one ``metrics.csv``; per component with
    parents, ``attribution_<c>.csv`` and ``attribution_by_{cluster,label}_<c>.csv``; per
    compared group and modality, ``de_<modality>_<group>.csv``, a volcano plot and,
    with gene sets, ``gsea_<group>.csv`` with its figures; and ``latent_<c>.png``.
    """
    from ..plotting import (
        plot_attribution_by_cluster,
        plot_latents,
        plot_neighbourhood,
        plot_pathways,
        plot_running_score,
        plot_volcano,
    )

    options = options or AnalysisOptions()
    _check(model, data, options)
    seed = 0 if options.seed is None else int(options.seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    order = list(model.graph.order)
    if not all(f"z_{c}" in data.obsm for c in order):
        model.annotate(data)
    labels = None if options.label_key is None else data.obs_column(options.label_key).astype(str).to_numpy()
    batch_column = next((k for s in model.modality_specs.values() for k in s["batch_key"]), None)
    batch = None if batch_column is None else data.obs_column(batch_column).astype(str).to_numpy()

    # 1. clusters
    clusters: dict[str, np.ndarray] = {}
    for c in order:
        if f"cluster_probabilities_{c}" not in data.obsm:
            continue
        table = cluster_assignments(data, c)
        clusters[c] = table["cluster"].astype(str).to_numpy()
        problem = degenerate_clustering(clusters[c], c)
        if problem:
            logger.warning(problem)
        _write(table, out / f"clusters_{c}.csv", written)
        if labels is not None:
            _write(cluster_summary(clusters[c], labels), out / f"cluster_summary_{c}.csv", written, index=False)

    # 2. metrics and neighbourhood tables of every latent space
    latents = {f"z_{c}": data.obsm[f"z_{c}"] for c in order}
    latents.update({f"z_hat_{c}": data.obsm[f"z_hat_{c}"] for c in order if model.graph.parents(c)})
    if len(order) > 1:
        latents["z_" + "+".join(order)] = np.concatenate([data.obsm[f"z_{c}"] for c in order], axis=1)
    rows, neighbourhoods = [], {}
    for name, latent in latents.items():
        own = name[len("z_"):] if name[len("z_"):] in clusters else None
        reference = labels if labels is not None else (clusters.get(own) if own else None)
        if reference is None:
            continue
        neighbourhoods[name] = neighbourhood_table(latent, reference, k=options.k, index=data.obs_names)
        _write(neighbourhoods[name], out / f"neighbourhood_{name}.csv", written)
        if labels is not None:
            metrics = evaluate_latent(latent, labels, batch=batch, clusters=clusters.get(own) if own else None,
                                      seed=seed)
            rows.append({"latent": name, **metrics})
    if rows:
        _write(pd.DataFrame(rows).set_index("latent"), out / "metrics.csv", written)
    if neighbourhoods:
        _save(plot_neighbourhood(neighbourhoods), out / "neighbourhood.png", written)

    # 3. conditional attribution of components with parents
    score_columns: dict[str, list[str]] = {c: [] for c in order}
    if options.attribution:
        for c in (c for c in order if model.graph.parents(c)):
            scores = conditional_attribution(model, data, c, steps=options.steps, baseline=options.baseline)
            _write(scores, out / f"attribution_{c}.csv", written)
            for m in model.graph.modalities(c):
                data.obs[f"attribution_{c}_{m}"] = scores[m].to_numpy()
                score_columns[c].append(f"attribution_{c}_{m}")
            # by the component's own clusters (paper Fig. 4) and, with annotations, by label
            first = model.graph.modalities(c)[0]
            for kind, groups in (("cluster", clusters.get(c)), ("label", labels)):
                if groups is None:
                    continue
                summary = attribution_by_cluster(scores, groups)
                _write(summary, out / f"attribution_by_{kind}_{c}.csv", written)
                _save(plot_attribution_by_cluster(summary, f"{first}_mean", title=f"conditional attribution of z_{c}"),
                      out / f"attribution_by_{kind}_{c}.png", written)

    # 4. differential analysis and GSEA
    groupby = options.groupby or options.label_key
    if groupby is not None:
        values = data.obs_column(groupby).astype(str)
        groups = list(options.groups) if options.groups else sorted(v for v in values.unique() if v != options.reference)
        modalities = list(options.modalities) if options.modalities else [
            m for c in order for m in model.graph.modalities(c) if model.components[c].likelihoods[m].uses_library_size
        ]
        for m in modalities:
            for group in groups:
                table = differential_analysis(model, data, m, group_a=group, group_b=options.reference,
                                              groupby=groupby, n_samples=options.n_samples, delta=options.delta,
                                              seed=seed)
                stem = f"{_slug(m)}_{_slug(group)}" + (f"_vs_{_slug(options.reference)}" if options.reference else "")
                _write(table, out / f"de_{stem}.csv", written)
                _save(plot_volcano(table), out / f"volcano_{stem}.png", written)
                logger.info("differential %s %s: %d significant features", m, group, int(table["significant"].sum()))
                if options.gene_sets is None:
                    continue
                enrichment = gsea(table, options.gene_sets, upper_case=options.upper_case,
                                  permutations=options.permutations, seed=seed)
                _write(enrichment.table, out / f"gsea_{stem}.csv", written, index=False)
                _save(plot_pathways(enrichment, title=f"GSEA: {group} vs {options.reference or 'rest'}"),
                      out / f"gsea_{stem}.png", written)
                _save(plot_running_score(enrichment), out / f"gsea_running_{stem}.png", written)

    # 5. latent plots coloured by cluster, label, batch and attribution
    for c in order:
        color_by = [k for k in (options.label_key, batch_column) if k is not None] + score_columns[c]
        _save(plot_latents(data, [c], color_by=color_by, method=options.embedding, seed=seed),
              out / f"latent_{c}.png", written)
    return written


def analyze_run(run_dir: str | Path, out: str | Path | None = None, options: AnalysisOptions | None = None) -> list[Path]:
    """:func:`analyze` a folder written by ``cavachon-like train`` (default output: ``RUN_DIR/analysis``).

    The run's ``label_key`` and seed are the defaults for ``options``.
    """
    model, data, config = load_run(run_dir)
    options = options or AnalysisOptions()
    if options.label_key is None:
        options.label_key = (config.get("data") or {}).get("label_key")
    if options.seed is None:
        options.seed = config.get("seed", 0)
    return analyze(model, data, Path(run_dir) / "analysis" if out is None else out, options)
