"""Command-line interface.

``cavachon-like train CONFIG [--data PATH] [--out DIR] [--epochs N] [--seed S]`` trains a model;
``cavachon-like analyze RUN_DIR [options]`` adds clustering, metrics, attribution, differential
analysis and GSEA tables and figures to the folder ``train`` wrote;
``cavachon-like predict RUN_DIR --target M`` predicts a modality from the others;
``cavachon-like map-query RUN_DIR --data NEW.h5mu`` maps new cells (e.g. from new batches) into a run's model.
``--verbose`` (anywhere) shows TensorFlow's own log and debug messages.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

# Only TensorFlow-free modules at module level: --help and argument errors must answer at
# once, and TensorFlow's C++ log level has to be set before it is first imported.
from .defaults import DEFAULT_DELTA, DEFAULT_FDR
from .errors import DataWarning, InputError

logger = logging.getLogger("cavachon_like")

#: Lines TensorFlow's C++ side writes straight to stderr while it loads, which
#: TF_CPP_MIN_LOG_LEVEL does not reach: absl's INFO/WARNING lines from static initialisers
#: (oneDNN, "Could not find cuda drivers") and absl's note that logging is not initialised.
#: absl's prefix is "I0000 00:00:1796196308.186971   14658 port.cc:153] " (the time is raw
#: seconds until absl is initialised, hence the loose pattern).
_TF_CHATTER = re.compile(r"^(?:[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\] "
                         r"|WARNING: All log messages before absl::InitializeLog\(\) is called)")
#: CUDA's error on a machine with the CUDA libraries but no driver or GPU: expected, not an error there.
_NO_GPU = re.compile(r"^E\d{4} [\d:.]+ +\d+ \S+:\d+\] failed call to cuInit")


def _depth(value: str) -> float | str:
    """``--depth``: a positive number or ``median``."""
    if value == "median":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'median', got {value!r}") from None


def _parser() -> argparse.ArgumentParser:
    # --verbose is accepted before and after the subcommand. On the subcommands it defaults to
    # SUPPRESS: a subparser's default would otherwise overwrite a --verbose given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show TensorFlow's own log lines and debug messages")
    parser = argparse.ArgumentParser(prog="cavachon-like", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", default=False,
                        help="show TensorFlow's own log lines and debug messages")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", parents=[common], help="train a model from a YAML configuration")
    train.add_argument("config", help="YAML file (see configs/ and the README's YAML reference)")
    train.add_argument("--data", help="data file (.h5mu) replacing the config's data source")
    train.add_argument("--out", default="runs/latest", help="output folder (default: runs/latest)")
    train.add_argument("--epochs", type=int, help="epochs per training stage")
    train.add_argument("--seed", type=int, help="seed for everything (weights, noise, shuffling, splits)")
    train.add_argument("--overwrite", action="store_true",
                       help="replace an earlier run in --out (its analysis/ and tensorboard/ folders too)")
    train.add_argument("--resume", action="store_true",
                       help="continue an interrupted run in --out from its last finished epoch (same config)")

    predict = commands.add_parser("predict", parents=[common],
                                  help="predict a modality of a training run from the cells' others")
    predict.add_argument("run_dir", help="folder written by `cavachon-like train` (result.h5mu, model.keras)")
    predict.add_argument("--target", required=True, help="modality to predict (e.g. rna)")
    predict.add_argument("--data", help="cells to predict for (.h5mu; default: the run's own cells)")
    predict.add_argument("--out", help="output .h5mu (default: RUN_DIR/predicted_<target>.h5mu)")
    predict.add_argument("--n-samples", type=int, default=25, help="draws of the target's latent (default 25)")
    predict.add_argument("--seed", type=int, default=0, help="seed of those draws (default 0)")
    predict.add_argument("--log1p", action="store_true",
                         help="expected log-normalised values (log1p of counts per 10,000, as scanpy's) instead of "
                              "decoded means")
    predict.add_argument("--depth", type=_depth,
                         help="with --log1p: library size the counts are drawn at, or 'median' (the training "
                              "median); default: each cell's, predicted from its other modalities' library sizes")

    query = commands.add_parser("map-query", parents=[common],
                                help="map new cells (e.g. new batches) into a training run's model (scArches-style)")
    query.add_argument("run_dir", help="folder written by `cavachon-like train` (result.h5mu, model.keras)")
    query.add_argument("--data", required=True,
                       help="the new cells (.h5mu with the run's modalities and batch columns)")
    query.add_argument("--out", help="output .h5mu: the new cells with latents, clusters and transferred labels "
                       "(default: RUN_DIR/query.h5mu)")
    query.add_argument("--label-key", help="obs column of the run's cells whose labels are transferred "
                       "(default: the run's data.label_key; none: no transfer)")
    query.add_argument("--latent", help="latent space of the label transfer (default: the last component)")
    query.add_argument("--neighbors", type=int, dest="n_neighbors", metavar="K",
                       help="reference neighbours per new cell in the label transfer (default: 15)")
    query.add_argument("--epochs", type=int,
                       help="epochs per training stage of the new batches' weights (default: 20)")
    query.add_argument("--reindex", action="store_true",
                       help="take the run's features by name, filling missing ones with zeros "
                       "(default: features that differ from the run's are an error)")
    query.add_argument("--new-covariates", action="store_true",
                       help="models without encoders (multiDGD with its covariate model): place each new batch "
                       "under a new covariate component fitted to its cells (default: naive integration)")
    query.add_argument("--model-out", help="also save the model extended with the new batches (.keras)")

    analyze = commands.add_parser("analyze", parents=[common],
                                  help="analyse a training run: tables (CSV) and figures (PNG)")
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


class _Formatter(logging.Formatter):
    """Progress and other INFO lines as plain sentences; warnings and errors say what and where."""

    def __init__(self, verbose: bool) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno == logging.INFO and not self.verbose:
            return record.getMessage()
        return super().format(record)


@contextlib.contextmanager
def _filtered_stderr() -> Iterator[None]:
    """Drop TensorFlow's C++ start-up lines from whatever is written to stderr (fd 2) inside.

    They are written by C++ code to the file descriptor, below Python's ``sys.stderr``, so
    the descriptor is pointed at a temporary file meanwhile and the other lines (Python
    warnings, real errors) are passed on afterwards. A failed cuInit becomes one log line.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr descriptor (e.g. a detached process): nothing to filter
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines(keepends=True)
            kept = [line for line in lines if not _TF_CHATTER.match(line) and not _NO_GPU.match(line)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()
            if any(_NO_GPU.match(line) for line in lines):
                logger.info("no usable GPU (CUDA could not initialise); running on CPU")


def _load_tensorflow(quiet: bool) -> None:
    """Import TensorFlow and find its devices now, under :func:`_filtered_stderr` if ``quiet``.

    Its C++ side logs while it loads and when it first looks for GPUs; doing both here keeps
    those lines out of the command's output without touching the library.
    """
    if "tensorflow" in sys.modules:  # already loaded (e.g. main() called from a test): nothing to hide
        return
    with _filtered_stderr() if quiet else contextlib.nullcontext():
        import tensorflow as tf

        tf.config.list_physical_devices()


def _configure(verbose: bool) -> None:
    """Log level, log format, TensorFlow's verbosity and matplotlib's backend for one command."""
    # Quiet TensorFlow's C++ logging below errors unless asked (or the user chose a level).
    quiet = not verbose and "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    if quiet:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    # The command line only writes figures to files; the library itself leaves the backend alone.
    os.environ.setdefault("MPLBACKEND", "Agg")
    handler = logging.StreamHandler()  # stderr: stdout keeps the command's results
    handler.setFormatter(_Formatter(verbose))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])  # a no-op if logging is set up already
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    warnings.simplefilter("ignore", DataWarning)  # each is logged already
    if not verbose:
        # Notes to developers of code calling our dependencies (mudata's upcoming API change) and
        # Keras's note that the optimizer in model.keras is not restored (analyze and predict do
        # not train): nothing a command-line user can act on. --verbose shows them.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer", category=UserWarning)
    _load_tensorflow(quiet)


def _wrote(paths: Sequence[str | Path], report: Path | None = None) -> str:
    """``wrote N files to DIR (report: ...)``: where a command's results went, in one line."""
    paths = [Path(p) for p in paths]
    if len(paths) == 1:
        return f"wrote {paths[0]}"
    folder = Path(os.path.commonpath([p.parent for p in paths])) if paths else Path(".")
    return f"wrote {len(paths)} files to {folder}" + (f" (report: {report})" if report is not None else "")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cavachon-like``.

    Parameters
    ----------
    argv
        Arguments after the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit code: 0, or 2 for an input error found after parsing (one line on stderr).
        Argument errors exit with code 2 from argparse before anything heavy is imported;
        bugs keep their traceback.
    """
    args = _parser().parse_args(argv)
    _configure(args.verbose)
    if args.command == "analyze":
        return _analyze(args)
    if args.command == "predict":
        return _predict(args)
    if args.command == "map-query":
        return _map_query(args)
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
    for path in written:  # each file with --verbose; by default the one summary line below says enough
        logger.debug("wrote %s", path)
    report = next((p for p in written if Path(p).name == "report.html"), None)
    print(_wrote(written, report))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from .analysis.prediction import predict_run
    from .errors import input_phase

    try:
        with input_phase():
            result = predict_run(args.run_dir, args.target, data_path=args.data, out=args.out,
                                 n_samples=args.n_samples, seed=args.seed, log1p=args.log1p, depth=args.depth)
    except InputError as error:
        print(f"cavachon-like: error: {error}", file=sys.stderr)
        return 2
    if "median_r" in result:
        print(f"median correlation with the observed {args.target} across features: {result['median_r']:.3f}")
    print(f"{_wrote([result['path']])} (predicted {args.target} in layer 'predicted')")
    return 0


def _map_query(args: argparse.Namespace) -> int:
    from .analysis.query import map_query_run

    options = {k: getattr(args, k) for k in ("latent", "n_neighbors", "epochs") if getattr(args, k) is not None}
    if args.new_covariates:
        options["new_covariates"] = True
    try:  # the input is read and checked (as InputError) before anything trains
        result = map_query_run(args.run_dir, args.data, out=args.out, label_key=args.label_key,
                               model_out=args.model_out, reindex=args.reindex, **options)
    except InputError as error:
        print(f"cavachon-like: error: {error}", file=sys.stderr)
        return 2
    mapping = result["mapping"]
    if mapping.accuracy is not None:
        print(f"label transfer: {mapping.accuracy:.3f} of the new cells get their own {mapping.label_key} "
              f"(reference cells among themselves: {mapping.reference_accuracy:.3f})")
    new = sorted({c for columns in mapping.new_categories.values() for cats in columns.values() for c in cats})
    keys = ", ".join(k.split("/", 1)[1] for k in result["written"] if not k.startswith("uns/"))
    model = f"; extended model: {result['model_path']}" if result["model_path"] is not None else ""
    print(f"{_wrote([result['path']])} ({len(mapping.obs_names)} cells; {keys}; new batches: "
          f"{', '.join(new) if new else 'none'}{model})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
