"""Command-line interface: ``cavachon-like train CONFIG [--data PATH] [--out DIR] [--epochs N] [--seed S]``."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cavachon-like", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a model from a YAML configuration")
    train.add_argument("config", help="YAML file (see configs/ and the README's YAML reference)")
    train.add_argument("--data", help="data file (.h5mu) replacing the config's data source")
    train.add_argument("--out", default="runs/latest", help="output folder (default: runs/latest)")
    train.add_argument("--epochs", type=int, help="epochs per training stage")
    train.add_argument("--seed", type=int, help="seed for everything (weights, noise, shuffling, splits)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Quiet TensorFlow's C++ start-up chatter; must happen before it is imported.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("cavachon_like").setLevel(logging.INFO)
    from .config import ConfigError, load_config, train

    overrides = {}
    if args.data is not None:
        overrides["data.path"] = args.data
    if args.epochs is not None:
        overrides["training.epochs"] = args.epochs
    if args.seed is not None:
        overrides["seed"] = args.seed
    try:
        config = load_config(args.config, overrides)
        result = train(config, args.out)
    except (ConfigError, ValueError, KeyError, FileNotFoundError) as error:
        # Input problems are reported before training starts; print them plainly.
        print(f"cavachon-like: error: {error}", file=sys.stderr)
        return 2
    for name, path in result["paths"].items():
        print(f"{name}: {path}")
    print(f"trained in {result['train_seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
