"""cavachon_like against scvi-tools' MultiVI on SNARE-seq: speed at the same batch size, time to
quality, distance to the matmul peak, memory; optionally scaling and a million cells from disk.

One command measures everything side by side on this machine and writes ``BENCHMARKS.md``
and ``benchmarks/results.json``; every number in them (and the README's benchmark numbers)
comes from that one run::

    python benchmarks/run.py --data ../shared/data/snare_mouse_cortex.h5mu
    python benchmarks/run.py --quick          # end-to-end check in minutes; numbers mean nothing

Steps
-----
1. SNARE-seq is QC-filtered as ``configs/snare.yaml`` says and written once to the cache, so
   every model trains on the same cells and features.
2. TensorFlow's float32 matmul throughput, before and after the training runs.
3. Quality: MultiVI with all of ``MULTIVI.train()``'s defaults (early stopping, up to 500
   epochs) and cavachon_like as ``configs/snare.yaml`` trains it, each saving its joint latent
   during training; 20-NN ``cell_type`` agreement against training time gives the
   time-to-quality table. Final latents are scored by the package's metrics.
4. Speed: cavachon_like (the shipped config, the paper's Table S1 widths, MultiVI's size) and
   MultiVI at the same batch size (``--batch-size``, MultiVI's default 128), and the shipped
   config at its own default (256), each a few epochs per stage, repeated and interleaved. One
   throughput definition for all: training cells through the whole model (every stage one
   epoch) per second of training, each stage's first (tracing) epoch left out, validation
   reported apart.
5. Optional: ``--scaling`` (simulated data of growing size) and ``--ondisk FILE`` (training
   steps from a file of a million cells on disk, ``benchmarks/ondisk_scale.py``).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from common import BENCHMARKS, DEFAULT_CACHE, DEFAULT_DATA, REPO, machine, median, require_file, write_json
from report import assess, joint_score, render

MULTIVI_VENV = BENCHMARKS / ".venv-multivi"
LABEL_KEY = "cell_type"
BATCH_KEY = "batch"
#: 20-NN agreement levels of the time-to-quality table (MultiVI's final value is added).
LEVELS = (0.50, 0.55, 0.60, 0.65, 0.70)

FULL = {
    "speed_epochs": 3,
    "repeats": 3,
    "quality_epochs": None,
    "cells": [10_000, 40_000, 160_000],
    "regions": [25_000, 50_000, 100_000, 200_000],
    "scaling_regions": 20_000,
    "scaling_cells": 10_000,
    "scaling_genes": 1_000,
    "scaling_epochs": 2,
    "matmul_repeats": 10,
    "ondisk_steps": 20,
    "ondisk_args": [],
}
QUICK = {
    "speed_epochs": 2,
    "repeats": 1,
    "quality_epochs": 3,
    "cells": [1_000, 2_000],
    "regions": [2_000, 4_000],
    "scaling_regions": 2_000,
    "scaling_cells": 1_000,
    "scaling_genes": 300,
    "scaling_epochs": 1,
    "matmul_repeats": 3,
    "ondisk_steps": 6,
    "ondisk_args": ["--cells", 3000, "--regions", 5000, "--genes", 1000, "--backed", "true", "--warmup", 2],
    "subsample": 1_500,
}
#: ATAC logit offset of the simulator for about 1.6 % non-zero regions (low density, like real ATAC).
ATAC_BIAS = -5.5


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------------------- processes
def run_process(command: list[Any], log_path: Path) -> float:
    """Run ``command`` to completion, output to ``log_path``; its wall seconds.

    Peak memory is measured by the child itself (``VmHWM``, see :func:`common.peak_rss_bytes`):
    the kernel's per-child ``ru_maxrss`` would include this process' resident size at fork time.
    """
    log(" ".join(str(c) for c in command))
    start = time.perf_counter()
    with open(log_path, "w") as stream:
        returncode = subprocess.call([str(c) for c in command], stdout=stream, stderr=subprocess.STDOUT, cwd=REPO)
    if returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{command[1]} failed with exit code {returncode}; log {log_path}:\n{tail}")
    return time.perf_counter() - start


def ensure_multivi_env() -> Path:
    """The MultiVI virtual environment's python, created by setup_multivi.sh when missing."""
    python = MULTIVI_VENV / "bin" / "python"
    if not python.exists():
        log(f"creating the MultiVI environment in {MULTIVI_VENV} (torch CPU build, then scvi-tools)")
        subprocess.run(["bash", str(BENCHMARKS / "setup_multivi.sh"), str(MULTIVI_VENV)], check=True)
    return python


def train(model: str, mode: str, data: Path, out: Path, seed: int, batch_size: int | None = None,
          epochs: int | None = None) -> dict[str, Any]:
    """One training process (``cavachon_<variant>`` or ``multivi``); its result.json."""
    if model == "multivi":
        command = [ensure_multivi_env(), BENCHMARKS / "multivi_train.py", "--batch-key", BATCH_KEY]
    else:
        command = [sys.executable, BENCHMARKS / "cavachon_train.py", "--variant", model.split("_", 1)[1], "--no-qc"]
    command += ["--data", data, "--mode", mode, "--out", out, "--seed", seed]
    if batch_size:
        command += ["--batch-size", batch_size]
    if epochs:
        command += ["--epochs", epochs]
    wall = run_process(command, out.with_suffix(".log"))
    result = json.loads((out / "result.json").read_text())
    result.update(wall_seconds=wall, out=str(out))
    return result


# ---------------------------------------------------------------------------------------- data
def prepare_snare(path: Path, cache: Path, subsample: int | None, seed: int) -> tuple[Path, dict[str, np.ndarray]]:
    """QC-filter SNARE-seq as configs/snare.yaml does, write it to ``cache``; labels and batches.

    The file keeps ``batch`` and ``cell_type`` in the global ``obs`` (MultiVI reads its
    batch column there) and plain CSR count matrices.
    """
    import mudata as md

    name = "snare_qc.h5mu" if subsample is None else f"snare_qc_{subsample}.h5mu"
    target = cache / name
    if not target.exists():
        from tf_common import snare_config

        from cavachon_like.config import load_data

        data = load_data(snare_config(path)["data"], seed=seed)
        if subsample is not None and subsample < data.n_obs:
            cells = np.sort(np.random.default_rng(seed).choice(data.n_obs, subsample, replace=False))
            data = data.subset(cells)
        mods = {}
        for m in data.mod:
            adata = data.mod[m].copy()
            adata.uns = {}
            mods[m] = adata
        out = md.MuData(mods)
        for key in (BATCH_KEY, LABEL_KEY):
            out.obs[key] = data.mod["rna"].obs[key].astype(str).values
        cache.mkdir(parents=True, exist_ok=True)
        out.write(str(target))
        log(f"wrote {target} ({out.n_obs} cells; " + ", ".join(f"{m} {a.n_vars}" for m, a in out.mod.items()) + ")")
    prepared = md.read_h5mu(str(target), backed=False)
    labels = {"labels": prepared.obs[LABEL_KEY].astype(str).values, "batch": prepared.obs[BATCH_KEY].astype(str).values}
    return target, labels


def simulated(cache: Path, n_cells: int, n_atac: int, n_rna: int, seed: int) -> Path:
    """An .h5mu of simulated paired data (cached), ~1.6 % of ATAC entries non-zero."""
    target = cache / f"sim_{n_cells}x{n_atac}_{n_rna}_{ATAC_BIAS}_{seed}.h5mu"
    if not target.exists():
        import cavachon_like as cl

        data = cl.simulate(n_cells=n_cells, n_atac=n_atac, n_rna=n_rna, atac_bias=ATAC_BIAS, seed=seed)
        data.uns.clear()
        for adata in data.mod.values():
            adata.uns = {}
        cache.mkdir(parents=True, exist_ok=True)
        data.write(str(target))
    return target


# ---------------------------------------------------------------------------------------- steps
#: Speed runs: (key, model, batch size or None for the model's default, label).
def speed_specs(batch_size: int) -> list[tuple[str, str, int | None, str]]:
    return [
        ("cavachon_paper", "cavachon_paper", batch_size, f"cavachon_like (configs/snare.yaml), batch {batch_size}"),
        ("cavachon_table_s1", "cavachon_table_s1", batch_size, f"cavachon_like (Table S1 widths), batch {batch_size}"),
        ("cavachon_matched", "cavachon_matched", batch_size, f"cavachon_like (MultiVI's size), batch {batch_size}"),
        ("multivi", "multivi", batch_size, f"MultiVI, batch {batch_size}"),
        ("cavachon_paper_default", "cavachon_paper", None, "cavachon_like (configs/snare.yaml), its default batch"),
    ]


def speed(data: Path, work: Path, plan: dict, batch_size: int, seed: int) -> dict[str, dict]:
    """Interleaved repeats of every speed run; per run the median over repeats."""
    runs: dict[str, list[dict]] = {}
    for repeat in range(plan["repeats"]):
        for key, model, batch, label in speed_specs(batch_size):
            result = train(model, "speed", data, work / f"speed_{key}_{repeat}", seed, batch, plan["speed_epochs"])
            result["label"] = label
            runs.setdefault(key, []).append(result)
            log(f"{label}: {result['seconds_per_model_epoch']:.2f} s per whole-model epoch (training part)")
    summary = {}
    for key, results in runs.items():
        first = results[0]
        row = {k: first[k] for k in ("label", "model", "parameters", "batch_size", "n_train_cells")}
        for k in ("seconds_per_model_epoch", "seconds_per_model_epoch_with_validation", "first_model_epoch_seconds"):
            row[k] = median([r[k] for r in results])
            row[f"{k}_runs"] = [r[k] for r in results]
        row["cells_per_second"] = row["n_train_cells"] / row["seconds_per_model_epoch"]
        row["peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in results)
        row["stages"] = {}
        for stage in first["stages"]:
            steps = median([r["stages"][stage]["median_step_seconds"] for r in results])
            entry = {"median_step_seconds": steps, "train_seconds": median([r["stages"][stage]["train_seconds"]
                                                                             for r in results])}
            if "flops_per_step" in first["stages"][stage]:
                entry["flops_per_step"] = first["stages"][stage]["flops_per_step"]
                entry["flops_per_second"] = entry["flops_per_step"] / steps
            row["stages"][stage] = entry
        summary[key] = row
    return summary


def quality(data: Path, work: Path, plan: dict, labels: dict[str, np.ndarray], seed: int) -> dict[str, dict]:
    """Each package's default training with its latent trajectory, scored here by the shared metrics."""
    from cavachon_like.analysis.metrics import evaluate_latent, knn_agreement

    results = {}
    for key in ("multivi", "cavachon_paper"):  # MultiVI's convergence sets the last level
        out = work / f"quality_{key}"
        result = train(key, "quality", data, out, seed, epochs=plan["quality_epochs"])
        for point in result["trajectory"]:
            latent = np.load(out / "trajectory" / point["latent"])
            point["knn_agreement"] = knn_agreement(latent, labels["labels"], k=20)
        if key == "multivi":
            latents = {"joint": np.load(out / "latent.npy")}
            clusters = {}
        else:
            components = result["components"]
            parts = {c: np.load(out / f"latent_{c}.npy") for c in components}
            latents = {f"z_{c}": parts[c] for c in components}
            latents["[" + ",".join(f"z_{c}" for c in components) + "]"] = np.concatenate(list(parts.values()), axis=1)
            # the RNA component (conditioned on ATAC) clusters the joint latent
            clusters = {f"z_{c}": np.load(out / f"clusters_{c}.npy") for c in components
                        if (out / f"clusters_{c}.npy").exists()}
            clusters[next(k for k in latents if k.startswith("["))] = clusters.get(f"z_{components[-1]}")
        result["scores"] = {name: evaluate_latent(latent, labels["labels"], labels["batch"], clusters.get(name),
                                                  k=20, seed=seed) for name, latent in latents.items()}
        results[key] = result
        log(f"{result['model']} quality: {result['epochs_run']} epochs, {result['train_seconds_unscored']:.0f} s, "
            f"20-NN {joint_score(result)['knn_agreement']:.3f}")
    return results


def time_to_quality(quality_runs: dict[str, dict]) -> dict[str, Any]:
    """Training seconds (and epoch) at which each run's joint latent first reaches each level."""
    multivi = quality_runs.get("multivi")
    levels = list(LEVELS)
    converged = None
    if multivi:
        converged = multivi["scores"]["joint"]["knn_agreement"]
        levels = sorted(set(levels) | {round(converged, 3)})
    table: dict[str, dict] = {}
    for key, run in quality_runs.items():
        table[key] = {}
        for level in levels:
            hit = next((p for p in run["trajectory"] if p["knn_agreement"] >= level), None)
            table[key][f"{level:.3f}"] = None if hit is None else {"seconds": hit["train_seconds"], "epoch": hit["epoch"]}
    return {"levels": [f"{lv:.3f}" for lv in levels], "multivi_converged": converged, "table": table}


def matmul_peak(n_atac: int, repeats: int) -> list[dict]:
    """float32 matmul GFLOP/s: 2048^3 and the paper model's big layers at batch 256 (forward shapes)."""
    from tf_common import matmul_throughput

    shapes = [(2048, 2048, 2048), (256, n_atac, 1024), (256, 512, n_atac), (256, 1024, 512)]
    return matmul_throughput(shapes, repeats=repeats)


def flop_fraction(row: dict, peak: float) -> dict[str, float]:
    """Step-time weighted executed GFLOP/s of a speed run's stages, and its fraction of ``peak``."""
    seconds = sum(s["median_step_seconds"] for s in row["stages"].values())
    gflops = sum(s["flops_per_step"] for s in row["stages"].values()) / seconds / 1e9
    return {"executed_gflops": gflops, "fraction_of_peak": gflops / peak}


def scaling(cache: Path, work: Path, plan: dict, seed: int) -> list[dict]:
    """Seconds per epoch and peak memory of the paper-size model on simulated data of growing size."""
    sizes = [(n, plan["scaling_regions"]) for n in plan["cells"]]
    sizes += [(plan["scaling_cells"], r) for r in plan["regions"] if (plan["scaling_cells"], r) not in sizes]
    rows = []
    for n_cells, n_atac in sizes:
        data = simulated(cache, n_cells, n_atac, plan["scaling_genes"], seed)
        out = work / f"scaling_{n_cells}x{n_atac}"
        wall = run_process([sys.executable, BENCHMARKS / "cavachon_train.py", "--data", data, "--variant", "paper",
                            "--epochs", plan["scaling_epochs"] + 1, "--no-qc", "--no-latent", "--out", out,
                            "--seed", seed], work / f"{out.name}.log")
        result = json.loads((out / "result.json").read_text())
        rows.append({
            "n_cells": n_cells, "n_regions": n_atac, "n_genes": plan["scaling_genes"], "nnz": result["nnz"],
            "parameters": result["parameters"], "dense_bytes": 4 * n_cells * (n_atac + plan["scaling_genes"]),
            "seconds_per_epoch": {s: v["train_seconds"] for s, v in result["stages"].items()},
            "peak_rss_bytes": result["peak_rss_bytes"], "wall_seconds": wall,
        })
        log(f"scaling {n_cells} x {n_atac}: {rows[-1]['seconds_per_epoch']} s/epoch")
    return rows


def ondisk(path: Path, work: Path, plan: dict) -> dict[str, Any]:
    """Training steps from an on-disk file (written first if missing) by ``benchmarks/ondisk_scale.py``."""
    out = work / "ondisk.json"
    wall = run_process([sys.executable, BENCHMARKS / "ondisk_scale.py", "--path", path, "--steps",
                        plan["ondisk_steps"], "--json", out, *plan["ondisk_args"]], work / "ondisk.log")
    return {**json.loads(out.read_text()), "wall_seconds": wall}


def versions() -> dict[str, str]:
    from importlib import metadata

    names = ["tensorflow", "keras", "tensorflow-probability", "numpy", "scipy", "scikit-learn", "anndata", "mudata"]
    result = {}
    for name in names:
        try:
            result[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="SNARE-seq .h5mu (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="subsample, few epochs, small sizes: an end-to-end "
                        "check whose numbers mean nothing")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size of the like-for-like speed runs "
                        "(default MultiVI's, %(default)s)")
    parser.add_argument("--skip", default="", help="comma-separated steps to leave out: speed, quality")
    parser.add_argument("--scaling", action="store_true", help="also time simulated data of growing size")
    parser.add_argument("--ondisk", default=None, help="an .h5mu too large for memory to time training steps from "
                        "(written by simulate_to_disk if missing: 1M cells, about 19 GB)")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help="prepared data and model outputs")
    parser.add_argument("--out", default=None, help="folder for BENCHMARKS.md and results.json; default: the "
                        "repository root and benchmarks/ (benchmarks/quick/ with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    plan = dict(QUICK if args.quick else FULL)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skip - {"speed", "quality"}:
        parser.error(f"unknown steps in --skip: {sorted(skip - {'speed', 'quality'})}")
    cache = Path(args.cache)
    work = cache / ("runs_quick" if args.quick else "runs")
    work.mkdir(parents=True, exist_ok=True)
    if args.out:
        markdown_path, json_path = Path(args.out) / "BENCHMARKS.md", Path(args.out) / "results.json"
    elif args.quick:
        markdown_path, json_path = BENCHMARKS / "quick" / "BENCHMARKS.md", BENCHMARKS / "quick" / "results.json"
    else:
        markdown_path, json_path = REPO / "BENCHMARKS.md", BENCHMARKS / "results.json"
    markdown_path.parent.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    ensure_multivi_env()
    prepared, labels = prepare_snare(require_file(args.data), cache, plan.get("subsample"), args.seed)
    import mudata as md

    prepared_data = md.read_h5mu(str(prepared))
    data_info = {"cells": int(prepared_data.n_obs), "features": {m: int(a.n_vars) for m, a in prepared_data.mod.items()},
                 "nnz": {m: int(a.X.nnz) for m, a in prepared_data.mod.items()}, "file": str(prepared)}
    del prepared_data
    log(f"matmul throughput ({plan['matmul_repeats']} repeats per shape)")
    matmul_before = matmul_peak(data_info["features"]["atac"], plan["matmul_repeats"])
    results: dict[str, Any] = {
        "command": "python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": args.quick, "plan": plan, "batch_size": args.batch_size, "machine": machine(),
        "versions": versions(), "data": data_info,
    }
    if "quality" not in skip:
        results["quality"] = quality(prepared, work, plan, labels, args.seed)
        results["time_to_quality"] = time_to_quality(results["quality"])
        if "multivi" in results["quality"]:
            results["versions"].update(results["quality"]["multivi"]["versions"])
        write_json(json_path.with_suffix(".partial.json"), results)  # what a later failure would lose
    if "speed" not in skip:
        results["speed"] = speed(prepared, work, plan, args.batch_size, args.seed)
        write_json(json_path.with_suffix(".partial.json"), results)
    matmul_after = matmul_peak(data_info["features"]["atac"], plan["matmul_repeats"])
    results["matmul"] = {"before": matmul_before, "after": matmul_after}
    peak = max(r["gflops"] for r in matmul_before + matmul_after)
    results["flops"] = {"peak_gflops": peak}
    for key, row in results.get("speed", {}).items():
        if key.startswith("cavachon"):
            results["flops"][key] = flop_fraction(row, peak)
    if args.scaling:
        results["scaling"] = scaling(cache, work, plan, args.seed)
    if args.ondisk:
        results["ondisk"] = ondisk(Path(args.ondisk), work, plan)
    results["targets"] = assess(results)
    results["total_seconds"] = time.perf_counter() - start
    write_json(json_path, results)
    json_path.with_suffix(".partial.json").unlink(missing_ok=True)
    markdown_path.write_text(render(results))
    log(f"wrote {markdown_path} and {json_path} in {results['total_seconds'] / 60:.1f} min")
    for check in results["targets"]:
        log(f"target: {check['target']}: {check['text']} -> {'met' if check['met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
