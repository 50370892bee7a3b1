"""``cavachon-like analyze``: every analysis of a training run, written as CSV tables and PNG figures."""
from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import input_phase
from ..model.differential import DEFAULT_DELTA, DEFAULT_FDR
from ..progress import Steps, format_seconds
from .attribution import attribution_by_cluster, top_attributed_features
from .clustering import (
    DEFAULT_K,
    cluster_assignments,
    cluster_summary,
    degenerate_clustering,
    neighbourhood_table,
)
from .enrichment import gsea, overrepresentation
from .html import Section, write_html_report
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
        (genes, not peaks), since GSEA needs gene symbols.
    n_draws, delta, fdr_target
        Monte Carlo draws, log2 fold-change margin and posterior expected FDR of the
        differential expression (``model.differential_expression``).
    gene_sets
        GMT file for GSEA and over-representation (skipped without one);
        ``upper_case`` maps mouse symbols to human sets (None: decided from the
        overlap); ``permutations`` per GSEA.
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
    n_draws: int = 100
    delta: float = DEFAULT_DELTA
    fdr_target: float = DEFAULT_FDR
    gene_sets: str | None = None
    upper_case: bool | None = None
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

    from ..data import read_h5mu

    run_dir = Path(run_dir)
    missing = [name for name in ("result.h5mu", "model.keras") if not (run_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{run_dir} lacks {missing}; give a folder written by `cavachon-like train`.")
    data = read_h5mu(run_dir / "result.h5mu")
    model = keras.saving.load_model(run_dir / "model.keras")
    run = data.uns.get("cavachon_like", {}).get("run")
    config = json.loads(run)["config"] if isinstance(run, str) else {}
    if not any(k.startswith("z_") for k in data.obsm):
        model.annotate(data)
    return model, data, config


class _Outputs:
    """Files written by :func:`analyze`, grouped into the sections of ``report.html``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.written: list[Path] = []
        self.sections: dict[str, Section] = {}
        self.warnings: list[str] = []

    def section(self, title: str, text: str = "") -> Section:
        if title not in self.sections:
            self.sections[title] = Section(title=title, text=text)
        return self.sections[title]

    def table(self, section: str, name: str, table: pd.DataFrame, caption: str, index: bool = True) -> None:
        path = self.out / name
        table.to_csv(path, index=index)
        self.written.append(path)
        self.section(section).tables.append((path, caption))

    def figure(self, section: str, name: str, figure: Any, caption: str) -> None:
        import matplotlib.pyplot as plt

        path = self.out / name
        figure.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(figure)
        self.written.append(path)
        self.section(section).figures.append((path, caption))

    def warn(self, message: str) -> None:
        logger.warning(message)
        self.warnings.append(message)


def analyze(model: Any, data: Any, out: str | Path, options: AnalysisOptions | None = None) -> list[Path]:
    """Run every analysis of ``model`` on ``data`` and write the tables and figures to ``out``.

    Uses only the public model interface. Returns the paths written. Writes, per
    latent ``c`` with a mixture prior, ``clusters_<c>.csv`` (and
    ``cluster_summary_<c>.csv`` with labels); per latent, ``neighbourhood_<latent>.csv``
    and one ``metrics.csv``; per latent with parents, ``attribution_<c>.csv``,
    ``attribution_by_{cluster,label}_<c>.csv`` and ``attribution_features_<c>_<m>.csv``;
    per compared group and modality, ``de_<modality>_<group>.csv`` with a volcano
    plot and, with gene sets, ``gsea_<...>.csv`` and ``ora_<...>.csv`` with figures;
    ``latent_<c>.png``; and ``report.html``, one file holding all of it.
    """
    from ..plotting import (
        plot_attribution_by_cluster,
        plot_latents,
        plot_neighbourhood,
    )

    options = options or AnalysisOptions()
    _check(model, data, options)
    seed = 0 if options.seed is None else int(options.seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = _Outputs(out)
    order = list(model.latent_names)
    if not all(f"z_{c}" in data.obsm for c in order):
        model.annotate(data)
    label = options.label_key
    labels = None if label is None else data.obs_column(label).astype(str).to_numpy()
    batch_column = next((k for m in model.modality_names for k in model.batch_keys(m)), None)
    batch = None if batch_column is None else data.obs_column(batch_column).astype(str).to_numpy()
    # One progress line per step as it starts and as it ends (see cavachon_like.progress); the
    # plan is known up front so each line can say "[i/n]".
    clustered = [c for c in order if f"cluster_probabilities_{c}" in data.obsm]
    attributed = list(model.attributable_latents) if options.attribution else []
    groupby = options.groupby or options.label_key
    compared = _compared(model, data, options, groupby) if groupby is not None else ([], [])
    steps = Steps(3 + bool(clustered) + bool(attributed) + (groupby is not None), logger)

    # 1. clusters
    if clustered:
        steps.start(f"clusters of {', '.join('z_' + c for c in clustered)}")
    clusters: dict[str, np.ndarray] = {}
    problems: dict[str, str] = {}
    for c in order:
        if f"cluster_probabilities_{c}" not in data.obsm:
            continue
        table = cluster_assignments(data, c)
        clusters[c] = table["cluster"].astype(str).to_numpy()
        problem = degenerate_clustering(clusters[c], c)
        if problem:
            problems[c] = problem
            report.warn(problem)
        report.table("Clusters", f"clusters_{c}.csv", table, f"cluster of every cell in z_{c} (argmax p(c|z))")
        if labels is not None:
            report.table("Clusters", f"cluster_summary_{c}.csv", cluster_summary(clusters[c], labels),
                         f"clusters of z_{c} against {label}: best-matching label, precision, recall, F1",
                         index=False)

    # 2. metrics and neighbourhood tables of every latent space
    latents = {f"z_{c}": data.obsm[f"z_{c}"] for c in order}
    latents.update({f"z_hat_{c}": data.obsm[f"z_hat_{c}"] for c in order if f"z_hat_{c}" in data.obsm
                    and c in model.attributable_latents})
    if len(order) > 1:
        latents["z_" + "+".join(order)] = np.concatenate([data.obsm[f"z_{c}"] for c in order], axis=1)
    steps.start(f"metrics and neighbourhoods of {len(latents)} latent spaces")
    rows, neighbourhoods = [], {}
    for name, latent in latents.items():
        own = name[len("z_"):] if name[len("z_"):] in clusters else None
        reference = labels if labels is not None else (clusters.get(own) if own else None)
        if reference is None:
            continue
        neighbourhoods[name] = neighbourhood_table(latent, reference, k=options.k, index=data.obs_names)
        report.table("Latent spaces", f"neighbourhood_{name}.csv", neighbourhoods[name],
                     f"per cell, the fraction of its k nearest neighbours in {name} sharing its label")
        if labels is not None:
            metrics = evaluate_latent(latent, labels, batch=batch, clusters=clusters.get(own) if own else None,
                                      seed=seed)
            rows.append({"latent": name, **metrics})
    if rows:
        report.table("Latent spaces", "metrics.csv", pd.DataFrame(rows).set_index("latent"),
                     f"agreement of each latent space with {label} and mixing of {batch_column or 'batches'}")
    if neighbourhoods:
        reference_name = label or "own cluster"
        report.figure("Latent spaces", "neighbourhood.png", plot_neighbourhood(neighbourhoods, label=reference_name),
                      f"fraction of k nearest neighbours sharing the {reference_name}, overall and per {reference_name}")

    # 3. conditional attribution of latents with parents
    titles: dict[str, str] = {}
    score_columns: dict[str, list[str]] = {c: [] for c in order}
    if attributed:
        steps.start(f"conditional attribution of {', '.join('z_' + c for c in attributed)} "
                    f"({options.steps} integrated-gradient steps)")
    if options.attribution:
        for c in model.attributable_latents:
            section = f"Conditional attribution of z_{c}"
            scores = model.conditional_attribution(data, c, steps=options.steps, baseline=options.baseline)
            report.table(section, f"attribution_{c}.csv", scores,
                         f"per cell: how much z_{c} beyond its parents changes the decoded data (mean squared change "
                         "of log1p counts per 10,000; *_delta: the exact value the integrated gradients "
                         "approximate)")
            for m in model.latent_modalities(c):
                column = f"attribution_{c}_{m}"
                data.obs[column] = scores[m].to_numpy()
                score_columns[c].append(column)
                titles[column] = f"conditional attribution of z_{c} on {m}"
            first = model.latent_modalities(c)[0]
            for kind, groups in (("cluster", clusters.get(c)), ("label", labels)):
                if groups is None:
                    continue
                summary = attribution_by_cluster(scores, groups)
                group_name = f"cluster of z_{c}" if kind == "cluster" else label
                report.table(section, f"attribution_by_{kind}_{c}.csv", summary,
                             f"attribution of z_{c} per {group_name}: cells, mean, median, quartiles")
                report.figure(section, f"attribution_by_{kind}_{c}.png",
                              plot_attribution_by_cluster(summary, f"{first}_mean", title=f"conditional attribution "
                                                          f"of z_{c} on {first}",
                                                          unit="mean squared change of log1p(counts per 10,000)",
                                                          group_name=group_name),
                              f"attribution of z_{c} per {group_name}: median with quartiles, mean as a diamond")
                for m in model.latent_modalities(c):
                    features = top_attributed_features(model, data, c, m, groups, seed=seed)
                    report.table(section, f"attribution_features_{kind}_{c}_{m}.csv", features,
                                 f"per {group_name}, the {m} features z_{c} changes most (mean change of "
                                 "log1p counts per 10,000 from the population-mean latent to the cell's)",
                                 index=False)

    # 4. differential expression and gene set enrichment
    if groupby is not None:
        n_groups = f"{len(compared[0])} group" + ("s" if len(compared[0]) != 1 else "")
        steps.start(f"differential analysis ({n_groups} of {groupby}; {', '.join(compared[1])}"
                    + ("; with GSEA)" if options.gene_sets else ")"))
        _differential(model, data, options, groupby, seed, report)

    # 5. latent plots coloured by cluster, label, batch and attribution
    steps.start(f"{options.embedding.upper()} plots of {len(order)} latent spaces")
    for c in order:
        color_by = [k for k in (label, batch_column) if k is not None] + score_columns[c]
        report.figure("Latent embeddings", f"latent_{c}.png",
                      plot_latents(data, [c], color_by=color_by, method=options.embedding, seed=seed, titles=titles,
                                   warnings={c: problems[c]} if c in problems else None),
                      f"z_{c} embedded with {options.embedding.upper()}, coloured by its clusters, "
                      + ", ".join(color_by))
    steps.start("report.html")
    path = write_html_report(out / "report.html", f"cavachon_like analysis of {data.n_obs:,} cells",
                             list(report.sections.values()), warnings=report.warnings)
    steps.finish()
    return report.written + [path]


def _compared(model: Any, data: Any, options: AnalysisOptions, groupby: str) -> tuple[list[str], list[str]]:
    """The groups and modalities the differential analysis compares (step 4 of :func:`analyze`)."""
    values = data.obs_column(groupby).astype(str)
    groups = list(options.groups) if options.groups else sorted(v for v in values.unique() if v != options.reference)
    modalities = list(options.modalities) if options.modalities else [
        m for m in model.modality_names if model.modality_support(m) == "counts"
    ]
    return groups, modalities


def _differential(model: Any, data: Any, options: AnalysisOptions, groupby: str, seed: int, report: _Outputs) -> None:
    """Step 4 of :func:`analyze`: DE per group and modality, GSEA and over-representation."""
    from ..plotting import plot_pathways, plot_running_score, plot_volcano

    groups, modalities = _compared(model, data, options, groupby)
    summary = []
    done, total = 0, len(groups) * len(modalities)
    for m in modalities:
        section = f"Differential expression: {m}"
        for group in groups:
            done += 1
            started = time.perf_counter()
            table = model.differential_expression(data, m, groupby=groupby, group_a=group, group_b=options.reference,
                                                  n_draws=options.n_draws, delta=options.delta,
                                                  fdr_target=options.fdr_target, seed=seed)
            versus = options.reference or "rest"
            stem = f"{_slug(m)}_{_slug(group)}" + (f"_vs_{_slug(options.reference)}" if options.reference else "")
            attrs = table.attrs
            summary.append({"modality": m, "group": group, "versus": versus, "n_a": attrs["n_a"],
                            "n_b": attrs["n_b"], "up": attrs["n_up"], "down": attrs["n_down"],
                            "top_up": ", ".join(table.index[table["is_de"] & (table["direction"] == "up")][:8])})
            report.table(section, f"de_{stem}.csv", table,
                         f"{m}, {group} vs {versus}: posterior log2 fold changes (LFC), probability of |LFC| > "
                         f"{attrs['delta']:g}, calls at expected FDR {attrs['fdr_target']:g}; means in "
                         f"{attrs['units']}")
            report.figure(section, f"volcano_{stem}.png", plot_volcano(table), f"volcano plot, {group} vs {versus}")
            # one line per comparison, so a long step shows it is moving and how fast
            logger.info("  (%d/%d) %s %s: %d up, %d down, %s", done, total, m, group, attrs["n_up"], attrs["n_down"],
                        format_seconds(time.perf_counter() - started))
            if options.gene_sets is None:
                continue
            started = time.perf_counter()
            try:
                enrichment = gsea(table, options.gene_sets, upper_case=options.upper_case,
                                  permutations=options.permutations, seed=seed)
            except ValueError as error:  # e.g. peaks, whose names are no gene symbols
                report.warn(f"GSEA of {m}, {group}: skipped, {error}")
                continue
            for problem in enrichment.warnings:
                report.warn(f"GSEA {m} {group}: {problem}")
            gsea_section = f"Gene set enrichment: {m}"
            report.table(gsea_section, f"gsea_{stem}.csv", enrichment.table,
                         f"preranked GSEA of {group} vs {versus} (ranking: DE score); sets up in {group} first",
                         index=False)
            report.figure(gsea_section, f"gsea_{stem}.png",
                          plot_pathways(enrichment, title=f"GSEA: {group} vs {versus}",
                                        permutations=options.permutations),
                          f"top gene sets up (left) and down (right) in {group}")
            report.figure(gsea_section, f"gsea_running_{stem}.png",
                          plot_running_score(enrichment, permutations=options.permutations),
                          f"running enrichment score of the top set up in {group}")
            ora = overrepresentation(table, options.gene_sets, upper_case=enrichment.upper_cased)
            report.table(gsea_section, f"ora_{stem}.csv", ora,
                         f"over-representation of the up and down calls of {group} (hypergeometric, background: "
                         "every tested gene)", index=False)
            logger.info("  (%d/%d) %s %s: GSEA and over-representation, %s", done, total, m, group,
                        format_seconds(time.perf_counter() - started))
    if summary:
        report.table(f"Differential expression: {modalities[0]}", "de_summary.csv", pd.DataFrame(summary),
                     "calls per comparison", index=False)


def analyze_run(run_dir: str | Path, out: str | Path | None = None, options: AnalysisOptions | None = None) -> list[Path]:
    """:func:`analyze` a folder written by ``cavachon-like train`` (default output: ``RUN_DIR/analysis``).

    The run's ``label_key`` and seed are the defaults for ``options``.
    """
    steps = Steps(None, logger)  # unnumbered: analyze()'s plan depends on the model it loads
    steps.start(f"reading {Path(run_dir) / 'result.h5mu'} and model.keras")
    with input_phase():
        model, data, config = load_run(run_dir)
        options = options or AnalysisOptions()
        if options.label_key is None:
            options.label_key = (config.get("data") or {}).get("label_key")
        if options.seed is None:
            options.seed = config.get("seed", 0)
        _check(model, data, options)
    steps.finish()
    return analyze(model, data, Path(run_dir) / "analysis" if out is None else out, options)
