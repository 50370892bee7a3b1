"""Gene-to-peak association by in-silico silencing on SNARE-seq (issue 11 target, paper 001 Fig. 6).

    python benchmarks/snare_gene_to_peak.py RUN_DIR --genes ../shared/data/mm10_genes.tsv.gz [--n-genes 200]

For a trained run whose RNA and ATAC share one latent (``configs/multidgd.yaml``; any joint
component works), silence each of the ``--n-genes`` most variable genes (variance of
log-normalised expression) in the cells that express it (at most ``--max-cells``), take one
latent step towards the silenced profile, and read every peak's predicted change
(``model.silencing_effects``). Then per gene: mean absolute change at peaks within ``--window`` of its
TSS against peaks on other chromosomes, their ratio and a permutation p-value
(``analysis.gene_to_peak``), summarised over genes, and the genome track of the gene with the
largest ratio written to ``--figure``.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from cavachon_like.analysis import gene_to_peak, peak_table, summarize_gene_to_peak
from cavachon_like.analysis.report import load_run
from cavachon_like.data.genome import read_gene_table
from cavachon_like.plotting import plot_gene_to_peak


def most_variable(x, names, n: int) -> list[str]:
    """The ``n`` genes with the largest variance of ``log1p(1e4 * x / library)`` (sparse, no densifying)."""
    x = x.tocsr().astype(np.float64)
    totals = np.maximum(np.asarray(x.sum(axis=1)).ravel(), 1.0)
    y = x.multiply(1e4 / totals[:, None]).tocsr()
    y.data = np.log1p(y.data)
    mean = np.asarray(y.mean(axis=0)).ravel()
    variance = np.asarray(y.multiply(y).mean(axis=0)).ravel() - mean**2
    return [str(g) for g in np.asarray(names)[np.argsort(-variance, kind="stable")[:n]]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--genes", required=True, help="gene coordinate table (e.g. mm10_genes.tsv.gz)")
    parser.add_argument("--n-genes", type=int, default=200)
    parser.add_argument("--max-cells", type=int, default=200)
    parser.add_argument("--window", type=int, default=10_000)
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--source", default="rna")
    parser.add_argument("--target", default="atac")
    parser.add_argument("--figure", default="gene_to_peak.png")
    args = parser.parse_args()
    model, data, _ = load_run(args.run)
    table = read_gene_table(args.genes)
    genes = most_variable(data.mod[args.source].X, data.mod[args.source].var_names, args.n_genes)
    start = time.perf_counter()
    effects = model.silencing_effects(data, genes, source=args.source, target=args.target, max_cells=args.max_cells)
    seconds = time.perf_counter() - start
    result = gene_to_peak(effects, table, window=args.window, n_permutations=args.permutations)
    summary = summarize_gene_to_peak(result)
    print(f"{len(genes)} genes silenced in {seconds:.0f} s; {summary['n_genes']} with peaks within "
          f"{args.window} bp of their TSS ({len(result.attrs['skipped'])} without)")
    print(f"mean absolute change near {summary['near_mean_abs']:.3g}, on other chromosomes {summary['far_mean_abs']:.3g}: "
          f"ratio {summary['ratio']:.2f} (permutation p {summary['p_value']:.4f}); genes with ratio > 1: {summary['fraction_above']:.2f}; "
          f"median per-gene p {result['p_value'].median():.3f}; genes with p < 0.05: "
          f"{(result['p_value'] < 0.05).mean():.2f}")
    best = result["ratio"].idxmax()
    plot_gene_to_peak(peak_table(effects, best, table), best, table, window=args.window).savefig(args.figure, dpi=120)
    print(f"genome track of {best} (ratio {result.loc[best, 'ratio']:.1f}, p {result.loc[best, 'p_value']:.3f}) "
          f"written to {args.figure}")


if __name__ == "__main__":
    main()
