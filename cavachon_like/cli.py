"""Command-line interface.

``cavachon-like train CONFIG [--data PATH] [--out DIR] [--epochs N] [--seed S]`` trains a model;
``cavachon-like analyze RUN_DIR [options]`` adds clustering, metrics, attribution, differential
analysis and GSEA tables and figures to the folder ``train`` wrote.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from .errors import DataWarning, InputError
from .model.differential import DEFAULT_DELTA, DEFAULT_FDR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cavachon-like", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a model from a YAML configuration")
    train.add_argument("config", help="YAML file (see configs/ and the README's YAML reference)")
    train.add_argument("--data", help="data file (.h5mu) replacing the config's data source")
    train.add_argument("--out", default="runs/latest", help="output folder (default: runs/latest)")
    train.add_argument("--epochs", type=int, help="epochs per training stage")
    train.add_argument("--seed", type=int, help="seed for everything (weights, noise, shuffling, splits)")
    train.add_argument("--overwrite", action="store_true",
                       help="replace an earlier run in --out (its analysis/ and tensorboard/ folders too)")
    train.add_argument("--resume", action="store_true",
                       help="continue an interrupted run in --out from its last finished epoch (same config)")

    predict = commands.add_parser("predict", help="predict a modality of a training run from the cells' others")
    predict.add_argument("run_dir", help="folder written by `cavachon-like train` (result.h5mu, model.keras)")
    predict.add_argument("--target", required=True, help="modality to predict (e.g. rna)")
    predict.add_argument("--data", help="cells to predict for (.h5mu; default: the run's own cells)")
    predict.add_argument("--out", help="output .h5mu (default: RUN_DIR/predicted_<target>.h5mu)")
    predict.add_argument("--n-samples", type=int, default=25, help="draws of the target's latent (default 25)")
    predict.add_argument("--seed", type=int, default=0, help="seed of those draws (default 0)")

    analyze = commands.add_parser("analyze", help="analyse a training run: tables (CSV) and figures (PNG)")
    analyze.add_argument("run_dir", help="folder written by `cavachon-like train` (result.h5mu, model.keras)")
    analyze.add_argument("--out", help="output folder (default: RUN_DIR/analysis)")
    analyze.add_argument("--label-key", help="obs column of cell annotations (default: the run's data.label_key)")
    analyze.add_argument("--groupby", help="obs column whose groups the differential analysis compares "
                         "(default: the label key; e.g. cluster_rna for the model's own clusters)")
    analyze.add_argument("--group", action="append", dest="groups",
                         help="group compared against the rest (repeatable; default: every group)")
    analyze.add_argument("--reference", help="compare against this group instead of all other cells")
    analyze.add_argument("--modality", action="append", dest="modalities",
                         help="modality of the differential analysis (repeatable; default: count modalities, i.e. genes)")
    analyze.add_argument("--draws", type=int, default=100, dest="n_draws",
                         help="Monte Carlo draws per comparison (default: 100)")
    analyze.add_argument("--delta", type=float, default=DEFAULT_DELTA,
                         help=f"log2 fold-change margin of a differential call (default: {DEFAULT_DELTA})")
    analyze.add_argument("--fdr-target", type=float, default=DEFAULT_FDR,
                         help=f"posterior expected FDR of the calls (default: {DEFAULT_FDR})")
    analyze.add_argument("--gene-sets", help="GMT file for GSEA (e.g. ../shared/data/genesets/...); none: no GSEA")
    analyze.add_argument("--upper-case", action=argparse.BooleanOptionalAction, default=None,
                         help="upper-case gene symbols (mouse -> human sets); default: when that matches more genes")
    analyze.add_argument("--permutations", type=int, default=1000, help="GSEA permutations (default: 1000)")
    analyze.add_argument("--steps", type=int, default=50, help="integrated-gradient steps (default: 50)")
    analyze.add_argument("--baseline", choices=["mean", "zero"], default="mean",
                         help="attribution baseline: population-mean latent (default) or the paper's blend-out")
    analyze.add_argument("--no-attribution", action="store_false", dest="attribution",
                         help="skip the conditional attribution")
    analyze.add_argument("--embedding", choices=["umap", "pca"], default="umap", help="2-D embedding of the plots")
    analyze.add_argument("--seed", type=int, help="seed (default: the run's)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Quiet TensorFlow's C++ start-up chatter; must happen before it is imported.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # The command line only writes figures to files; the library itself leaves the backend alone.
    os.environ.setdefault("MPLBACKEND", "Agg")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("cavachon_like").setLevel(logging.INFO)
    warnings.simplefilter("ignore", DataWarning)  # each is logged already
    if args.command == "analyze":
        return _analyze(args)
    if args.command == "predict":
        return _predict(args)
    from .config import load_config, train

    overrides = {}
    if args.data is not None:
        overrides["data.path"] = args.data
    if args.epochs is not None:
        overrides["training.epochs"] = args.epochs
    if args.seed is not None:
        overrides["seed"] = args.seed
    try:
        config = load_config(args.config, overrides)
        result = train(config, args.out, overwrite=args.overwrite, resume=args.resume)
    except InputError as error:
        # Input problems are found before training starts; print them plainly (bugs keep their traceback).
        print(f"cavachon-like: error: {error}", file=sys.stderr)
        return 2
    for name, path in result["paths"].items():
        print(f"{name}: {path}")
    print(f"trained in {result['train_seconds']:.1f} s")
    for problem in result["warnings"]:  # again at the end, where Keras' progress lines cannot bury it
        print(f"WARNING: {problem}", file=sys.stderr)
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from .analysis.report import AnalysisOptions, analyze_run

    fields = ("label_key", "groupby", "groups", "reference", "modalities", "n_draws", "delta", "fdr_target", "gene_sets",
              "upper_case", "permutations", "steps", "baseline", "attribution", "embedding", "seed")
    options = AnalysisOptions(**{name: getattr(args, name) for name in fields})
    try:
        written = analyze_run(args.run_dir, args.out, options)
    except InputError as error:
        print(f"cavachon-like: error: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0



def _predict(args: argparse.Namespace) -> int:
    from .analysis.prediction import predict_run
    from .errors import input_phase

    try:
        with input_phase():
            result = predict_run(args.run_dir, args.target, data_path=args.data, out=args.out,
                                 n_samples=args.n_samples, seed=args.seed)
    except InputError as error:
        print(f"cavachon-like: error: {error}", file=sys.stderr)
        return 2
    print(f"predicted {args.target}: {result['path']} (layer 'predicted')")
    if "median_r" in result:
        print(f"median correlation with the observed {args.target} across features: {result['median_r']:.3f}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
