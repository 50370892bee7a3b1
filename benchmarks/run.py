"""cavachon_like against scvi-tools' MultiVI on SNARE-seq, the distance to the matmul peak, and scaling.

One command runs everything side by side on this machine and writes ``BENCHMARKS.md``
and ``benchmarks/results.json``::

    python benchmarks/run.py                      # full run, 100 epochs (about an hour on 2 cores)
    python benchmarks/run.py --quick              # end-to-end check in a few minutes

Steps
-----
1. SNARE-seq is loaded and QC-filtered as ``configs/snare.yaml`` says and written once
   to the cache, so every model trains on the same cells and features.
2. TensorFlow's float32 matmul throughput is measured (a 2048^3 product and the
   paper model's largest layer shapes at batch size 256), before and after training.
3. cavachon_like with the paper's configuration, cavachon_like with MultiVI's size,
   and MultiVI (in its own virtual environment, created on first use) each train for
   ``--epochs`` epochs in their own process, so peak resident memory is per model.
   cavachon_like trains sequentially (ATAC stage, then RNA stage), each stage for
   ``--epochs`` epochs; MultiVI trains everything together for ``--epochs`` epochs.
4. Every latent space is scored here by the same code
   (:func:`cavachon_like.analysis.metrics.evaluate_latent`).
5. Scaling: simulated data of growing cells and regions, 2 epochs per stage each,
   seconds per epoch and peak memory against size (each in its own process).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from common import (
    BENCHMARKS,
    DEFAULT_CACHE,
    DEFAULT_DATA,
    REPO,
    machine,
    require_file,
    write_json,
)

MULTIVI_VENV = BENCHMARKS / ".venv-multivi"
LABEL_KEY = "cell_type"
BATCH_KEY = "batch"
#: Targets of issue 4.
TARGET_SPEEDUP = 1.5
TARGET_PEAK_FRACTION = 0.40
TARGET_MEMORY_BYTES = 2.5e9

FULL = {
    "cells": [10_000, 40_000, 160_000],
    "regions": [25_000, 50_000, 100_000, 200_000],
    "scaling_regions": 20_000,
    "scaling_cells": 10_000,
    "scaling_genes": 1_000,
    "scaling_epochs": 2,
    "matmul_repeats": 10,
}
QUICK = {
    "cells": [1_000, 2_000, 4_000],
    "regions": [2_000, 4_000, 8_000],
    "scaling_regions": 2_000,
    "scaling_cells": 1_000,
    "scaling_genes": 300,
    "scaling_epochs": 1,
    "matmul_repeats": 3,
    "subsample": 1_500,
}
#: ATAC logit offset of the simulator for about 1.6 % non-zero regions (low density, like real ATAC).
ATAC_BIAS = -5.5


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------------------- processes
def run_process(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``command`` to completion, output to ``log_path``; its wall time.

    Peak memory is measured by the child itself (``VmHWM``, see
    :func:`common.peak_rss_bytes`): the kernel's per-child ``ru_maxrss`` would include
    this process' own resident size at fork time.
    """
    log(" ".join(str(c) for c in command))
    start = time.perf_counter()
    with open(log_path, "w") as stream:
        returncode = subprocess.call([str(c) for c in command], stdout=stream, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})}, cwd=REPO)
    seconds = time.perf_counter() - start
    if returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{command[1]} failed with exit code {returncode}; log {log_path}:\n{tail}")
    return {"wall_seconds": seconds}


def ensure_multivi_env() -> Path:
    """The MultiVI virtual environment's python, created by setup_multivi.sh when missing."""
    python = MULTIVI_VENV / "bin" / "python"
    if not python.exists():
        log(f"creating the MultiVI environment in {MULTIVI_VENV} (torch CPU build, then scvi-tools)")
        subprocess.run(["bash", str(BENCHMARKS / "setup_multivi.sh"), str(MULTIVI_VENV)], check=True)
    return python


# ---------------------------------------------------------------------------------------- data
def prepare_snare(path: Path, cache: Path, subsample: int | None, seed: int) -> tuple[Path, dict[str, np.ndarray]]:
    """QC-filter SNARE-seq as configs/snare.yaml does, write it to ``cache``; labels and batches.

    The file keeps ``batch`` and ``cell_type`` in the global ``obs`` (MultiVI reads its
    batch column there) and plain CSR count matrices.
    """
    from tf_common import snare_config

    from cavachon_like.config import load_data

    name = "snare_qc.h5mu" if subsample is None else f"snare_qc_{subsample}.h5mu"
    target = cache / name
    if not target.exists():
        config = snare_config(path, epochs=1)
        data = load_data(config["data"], seed=seed)
        if subsample is not None and subsample < data.n_obs:
            cells = np.sort(np.random.default_rng(seed).choice(data.n_obs, subsample, replace=False))
            data = data.subset(cells)
        import mudata as md

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
    import mudata as md

    prepared = md.read_h5mu(str(target), backed=False)
    labels = {"labels": prepared.obs[LABEL_KEY].astype(str).values, "batch": prepared.obs[BATCH_KEY].astype(str).values}
    return target, labels


def simulated(cache: Path, n_cells: int, n_atac: int, n_rna: int, seed: int) -> Path:
    """An .h5mu of simulated paired data (cached), ~1.6 % of ATAC entries non-zero."""
    target = cache / f"sim_{n_cells}x{n_atac}_{n_rna}_{ATAC_BIAS}_{seed}.h5mu"
    if not target.exists():
        import cavachon_like as cl

        start = time.perf_counter()
        data = cl.simulate(n_cells=n_cells, n_atac=n_atac, n_rna=n_rna, atac_bias=ATAC_BIAS, seed=seed)
        data.uns.clear()
        for adata in data.mod.values():
            adata.uns = {}
        cache.mkdir(parents=True, exist_ok=True)
        data.write(str(target))
        log(f"simulated {n_cells} x ({n_atac} regions + {n_rna} genes) in {time.perf_counter() - start:.0f} s")
    return target


# ---------------------------------------------------------------------------------------- steps
def train_cavachon(data: Path, variant: str, epochs: int, work: Path, seed: int, extra: list[str] = ()) -> dict:
    out = work / f"cavachon_{variant}"
    usage = run_process([sys.executable, BENCHMARKS / "cavachon_train.py", "--data", data, "--variant", variant,
                         "--epochs", epochs, "--no-qc", "--out", out, "--seed", seed, *extra], work / f"{out.name}.log")
    import json

    result = json.loads((out / "result.json").read_text())
    result["process"] = usage
    result["out"] = str(out)
    return result


def train_multivi(data: Path, epochs: int, work: Path, seed: int) -> dict:
    import json

    out = work / "multivi"
    python = ensure_multivi_env()
    # scvi-tools must not see this process' TensorFlow/Keras environment variables
    usage = run_process([python, BENCHMARKS / "multivi_train.py", "--data", data, "--epochs", epochs,
                         "--batch-key", BATCH_KEY, "--out", out, "--seed", seed], work / "multivi.log")
    result = json.loads((out / "result.json").read_text())
    result["process"] = usage
    result["out"] = str(out)
    return result


def score(result: dict, labels: dict[str, np.ndarray], seed: int) -> dict[str, dict]:
    """Latent metrics of one model, by the shared metrics code."""
    from cavachon_like.analysis.metrics import evaluate_latent

    out = Path(result["out"])
    scores = {}
    if result["model"].startswith("MultiVI"):
        latent = np.load(out / "latent.npy")
        scores["joint"] = evaluate_latent(latent, labels["labels"], labels["batch"], k=20, seed=seed)
        return scores
    latents = {c: np.load(out / f"latent_{c}.npy") for c in result["components"]}
    clusters = {c: np.load(out / f"clusters_{c}.npy") for c in result["components"] if (out / f"clusters_{c}.npy").exists()}
    for c, latent in latents.items():
        scores[f"z_{c}"] = evaluate_latent(latent, labels["labels"], labels["batch"], clusters.get(c), k=20, seed=seed)
    if len(latents) > 1:
        joint = np.concatenate([latents[c] for c in result["components"]], axis=1)
        # the last component's clusters (rna, conditioned on atac) serve as the joint clustering
        last = result["components"][-1]
        scores["[" + ",".join(f"z_{c}" for c in result["components"]) + "]"] = evaluate_latent(
            joint, labels["labels"], labels["batch"], clusters.get(last), k=20, seed=seed
        )
    return scores


def matmul_peak(n_atac: int, repeats: int) -> list[dict]:
    """float32 matmul GFLOP/s: 2048^3 and the paper model's big layers at batch 256 (forward shapes)."""
    from tf_common import matmul_throughput

    shapes = [(2048, 2048, 2048), (256, n_atac, 1024), (256, 512, n_atac), (256, 1024, 512)]
    return matmul_throughput(shapes, repeats=repeats)


def scaling(cache: Path, work: Path, plan: dict, seed: int) -> list[dict]:
    """Seconds per epoch and peak memory of the paper-size model on simulated data of growing size."""
    import json

    sizes = [(n, plan["scaling_regions"]) for n in plan["cells"]]
    sizes += [(plan["scaling_cells"], r) for r in plan["regions"] if (plan["scaling_cells"], r) not in sizes]
    rows = []
    for n_cells, n_atac in sizes:
        data = simulated(cache, n_cells, n_atac, plan["scaling_genes"], seed)
        out = work / f"scaling_{n_cells}x{n_atac}"
        usage = run_process([sys.executable, BENCHMARKS / "cavachon_train.py", "--data", data, "--variant", "paper",
                             "--epochs", plan["scaling_epochs"], "--no-qc", "--no-latent", "--out", out,
                             "--seed", seed], work / f"{out.name}.log")
        result = json.loads((out / "result.json").read_text())
        row = {
            "n_cells": n_cells,
            "n_regions": n_atac,
            "n_genes": plan["scaling_genes"],
            "nnz": result["nnz"],
            "parameters": result["parameters"],
            "dense_bytes": 4 * n_cells * (n_atac + plan["scaling_genes"]),
            "seconds_per_epoch": {s["stage"]: s["epoch_seconds"][-1] for s in result["stages"]},
            "median_step_seconds": {s["stage"]: s["median_step_seconds"] for s in result["stages"]},
            "peak_rss_bytes": result["peak_rss_bytes"],
            "peak_rss_bytes_after_load": result["peak_rss_bytes_after_load"],
            "wall_seconds": usage["wall_seconds"],
        }
        rows.append(row)
        log(f"scaling {n_cells} x {n_atac}: {row['seconds_per_epoch']} s/epoch, peak RSS {row['peak_rss_bytes'] / 1e9:.2f} GB")
    return rows


# ---------------------------------------------------------------------------------------- report
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


def assess(results: dict) -> list[dict]:
    """Each target of issue 4: the measured value, the target, met or not."""
    models = results["models"]
    checks = []
    paper, matched, multivi = models.get("cavachon_paper"), models.get("cavachon_matched"), models.get("multivi")
    if matched and multivi:
        ratio = matched["cells_per_second"] / multivi["cells_per_second"]
        checks.append({"target": f"size-matched cavachon_like >= {TARGET_SPEEDUP}x MultiVI cells/s", "value": ratio,
                       "text": f"{ratio:.2f}x", "met": ratio >= TARGET_SPEEDUP})
        # cavachon_like's sequential stages each pass every cell once per epoch; time to
        # take the whole model through one epoch is the stricter, time-to-result view
        ratio = multivi["seconds_per_model_epoch"] / matched["seconds_per_model_epoch"]
        checks.append({"target": f"(same, per whole-model epoch: both stages) >= {TARGET_SPEEDUP}x", "value": ratio,
                       "text": f"{ratio:.2f}x", "met": ratio >= TARGET_SPEEDUP})
    if paper:
        # The issue counts the sparse first layer as dense-equivalent work; that can exceed
        # 100 % of the peak because the sparse product does far less work, so the fraction
        # of FLOPs actually executed is reported next to it.
        for kind in ("dense_equivalent", "executed"):
            fraction = results["flops"]["paper"][f"fraction_of_peak_{kind}"]
            checks.append({"target": f"paper-size model >= {TARGET_PEAK_FRACTION:.0%} of the matmul peak "
                                     f"({kind.replace('_', '-')} FLOPs)",
                           "value": fraction, "text": f"{fraction:.0%}", "met": fraction >= TARGET_PEAK_FRACTION})
        memory = paper["peak_rss_bytes"]
        checks.append({"target": "peak memory on SNARE-seq <= 2.5 GB (paper model)", "value": memory,
                       "text": f"{memory / 1e9:.2f} GB", "met": memory <= TARGET_MEMORY_BYTES})
    if results.get("scaling_exponent") is not None:
        exponent = results["scaling_exponent"]
        checks.append({"target": "seconds per epoch grow at most linearly with cells", "value": exponent,
                       "text": f"exponent {exponent:.2f}", "met": exponent <= 1.05})
    if paper and multivi:
        joint = next(v for k, v in paper["scores"].items() if k.startswith("["))["knn_agreement"]
        theirs = multivi["scores"]["joint"]["knn_agreement"]
        checks.append({"target": "20-NN cell_type agreement of [z_atac, z_rna] >= MultiVI's", "value": joint - theirs,
                       "text": f"{joint:.3f} vs {theirs:.3f}", "met": joint >= theirs})
    return checks


def gb(value: float) -> str:
    return f"{value / 1e9:.2f}"


def render(results: dict) -> str:
    """BENCHMARKS.md from ``results``."""
    m = results["machine"]
    lines = [
        "# Benchmarks: cavachon_like and scvi-tools MultiVI on SNARE-seq",
        "",
        "Generated by `benchmarks/run.py`; every number below was measured in one run on one machine.",
        "",
        f"Command: `{results['command']}`" + (" (**quick check: subsample and few epochs; not representative**)"
                                               if results["quick"] else ""),
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {gb(m['memory_bytes'] or 0)} GB RAM "
        f"({', '.join(m['simd'])}); {m['platform']}; Python {m['python']}. "
        + "Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + ".",
        "",
        f"Data: {results['data']['cells']} cells, " + ", ".join(f"{k} {v} features ({results['data']['nnz'][k]:,} "
                                                                   "non-zeros)" for k, v in results["data"]["features"].items())
        + f" after the QC of configs/snare.yaml; {results['epochs']} epochs"
        " (cavachon_like: per stage, ATAC then RNA; MultiVI: of the whole model). 90 % of cells train, 10 % validate; "
        "epoch times include validation.",
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
    ]
    for check in results["targets"]:
        lines.append(f"| {check['target']} | {check['text']} | {'yes' if check['met'] else '**no**'} |")
    lines += ["", "## Speed and size", "",
              "| model | parameters | cells/s | time per model epoch (s) | median epoch (s) | peak RSS (GB) |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for key, r in results["models"].items():
        lines.append(f"| {r['model']} | {r['parameters']:,} | {r['cells_per_second']:.0f} | "
                     f"{r['seconds_per_model_epoch']:.2f} | {r['median_epoch_seconds']:.2f} | "
                     f"{gb(r['peak_rss_bytes'])} |")
    lines += ["",
              ("cells/s: training cells passed through a training step per second of training, all stages together "
              "(cavachon_like's two stages each see every training cell once per epoch). Time per model epoch: "
              "training time / epochs, i.e. the time to take every component through one epoch. Median epoch: over "
              "all epochs of all stages. Peak RSS: the training process' own maximum resident memory (VmHWM), data loading "
              "included."), ""]
    lines += ["## Latent space", "",
              ("| model | latent | 20-NN agreement | k-means ARI | k-means NMI | own clusters ARI | cell-type "
              "silhouette | batch silhouette | iLISI |"),
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key, r in results["models"].items():
        for latent, s in r["scores"].items():
            own = f"{s['cluster_ari']:.3f} ({s['n_clusters']} clusters)" if "cluster_ari" in s else "-"
            lines.append(f"| {r['model']} | {latent} | {s['knn_agreement']:.3f} | {s['kmeans_ari']:.3f} | "
                         f"{s['kmeans_nmi']:.3f} | {own} | {s['label_silhouette']:.3f} | {s['batch_silhouette']:.3f} |"
                         f" {s['ilisi']:.3f} |")
    lines += ["",
              ("k-means uses k = number of cell types (15). Own clusters: argmax of each component's mixture prior "
              "p(c|z); for [z_atac, z_rna] the RNA component's clusters (RNA is conditioned on ATAC). Silhouettes as "
              "scIB: cell type (s + 1) / 2, batch 1 - |s| within cell types; higher is better for all columns."), ""]
    peak = results["flops"]["peak_gflops"]
    lines += ["## Distance to the machine's limit", "",
              "TensorFlow float32 matmul throughput (median of repeated `tf.function` products):", "",
              "| shape (m x k x n) | GFLOP/s before training | GFLOP/s after training |", "| --- | ---: | ---: |"]
    for before, after in zip(results["matmul"]["before"], results["matmul"]["after"]):
        lines.append(f"| {' x '.join(map(str, before['shape']))} | {before['gflops']:.1f} | {after['gflops']:.1f} |")
    lines += ["", f"Peak: {peak:.1f} GFLOP/s (the best of these).", "",
              ("| model | stage | median step (ms) | dense-equivalent GFLOP/step | GFLOP/s | % of peak | "
              "executed GFLOP/step | GFLOP/s | % of peak |"),
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key in ("paper", "matched"):
        model = results["models"].get(f"cavachon_{key}")
        if not model:
            continue
        for stage in model["stages"]:
            f, r = stage["flops_per_step"], stage["flops_per_second"]
            lines.append(f"| {model['model']} | {stage['stage']} | {stage['median_step_seconds'] * 1e3:.0f} | "
                         f"{f['dense_equivalent'] / 1e9:.2f} | {r['dense_equivalent'] / 1e9:.1f} | "
                         f"{r['dense_equivalent'] / 1e9 / peak:.0%} | {f['executed'] / 1e9:.2f} | "
                         f"{r['executed'] / 1e9:.1f} | {r['executed'] / 1e9 / peak:.0%} |")
        summary = results["flops"][key]
        lines.append(f"| {model['model']} | all (step-time weighted) | | | "
                     f"{summary['dense_equivalent_gflops']:.1f} | {summary['fraction_of_peak_dense_equivalent']:.0%} | | "
                     f"{summary['executed_gflops']:.1f} | {summary['fraction_of_peak_executed']:.0%} |")
    lines += ["",
              ("FLOPs count the dense layers' matmuls only: 2 B in out forward, plus 2 B in out for each weight "
              "gradient and each input gradient that training needs (frozen ancestors run forward only; data needs "
              "no gradient). **The encoder's first layer takes sparse counts: *dense-equivalent* counts it as if the "
              "input were dense (the work a dense implementation does); *executed* counts the non-zeros actually "
              "multiplied.** Likelihoods, normalisation, activations and the optimizer are not counted but take "
              "time, so both fractions understate how busy the machine is."), ""]
    if results.get("scaling"):
        lines += ["## Scaling (simulated data, paper-size model)", "",
                  (f"{results['plan']['scaling_epochs']} epoch(s) per stage; seconds of the last epoch of each stage; "
                  "each size in its own process. Dense bytes: what cells x features float32 would take."), "",
                  ("| cells | regions | genes | non-zeros (atac + rna) | parameters | s/epoch atac | s/epoch rna | "
                  "peak RSS (GB) | RSS after loading (GB) | dense bytes (GB) |"),
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for row in results["scaling"]:
            nnz = sum(row["nnz"].values())
            epoch = row["seconds_per_epoch"]
            lines.append(f"| {row['n_cells']:,} | {row['n_regions']:,} | {row['n_genes']:,} | {nnz:,} | "
                         f"{row['parameters']:,} | {epoch.get('atac', float('nan')):.1f} | {epoch.get('rna', float('nan')):.1f} | "
                         f"{gb(row['peak_rss_bytes'])} | {gb(row['peak_rss_bytes_after_load'])} | {gb(row['dense_bytes'])} |")
        if results.get("scaling_exponent") is not None:
            lines += ["", (f"Seconds per epoch ~ cells^{results['scaling_exponent']:.2f} over the cell sweep "
                      "(least squares on log-log, both stages summed).")]
        if results.get("memory_per_nonzero"):
            fit = results["memory_per_nonzero"]
            lines += ["", (f"Peak RSS over the cell sweep ~ {gb(fit['intercept_bytes'])} GB + "
                           f"{fit['bytes_per_nonzero']:.0f} bytes per non-zero (least squares). Over the region "
                           "sweep memory follows the parameters (weights, two Adam slots and gradients: 16 bytes "
                           "each), which grow with regions for any model; the counts stay sparse throughout.")]
        lines.append("")
    if results.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
    return "\n".join(lines)


def flop_summary(model: dict, peak: float) -> dict:
    """Step-time weighted FLOP/s of all stages of one model against ``peak`` GFLOP/s."""
    seconds = sum(s["median_step_seconds"] for s in model["stages"])
    dense = sum(s["flops_per_step"]["dense_equivalent"] for s in model["stages"]) / seconds / 1e9
    executed = sum(s["flops_per_step"]["executed"] for s in model["stages"]) / seconds / 1e9
    return {"dense_equivalent_gflops": dense, "executed_gflops": executed,
            "fraction_of_peak_dense_equivalent": dense / peak, "fraction_of_peak_executed": executed / peak}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="SNARE-seq .h5mu (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (per stage for cavachon_like); default 100, "
                        "2 with --quick")
    parser.add_argument("--quick", action="store_true", help="subsample, few epochs, small scaling sizes: an "
                        "end-to-end check whose numbers mean nothing")
    parser.add_argument("--models", default="paper,matched,multivi", help="comma-separated subset of %(default)s")
    parser.add_argument("--no-scaling", action="store_true", help="skip the scaling runs")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help="simulated and prepared data, model outputs")
    parser.add_argument("--out", default=None, help="folder for BENCHMARKS.md and results.json; default: the "
                        "repository root and benchmarks/ (benchmarks/quick/ with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    plan = dict(QUICK if args.quick else FULL)
    epochs = args.epochs or (2 if args.quick else 100)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - {"paper", "matched", "multivi"})
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from paper, matched, multivi")
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
    data_path = require_file(args.data)
    if "multivi" in models:
        ensure_multivi_env()
    prepared, labels = prepare_snare(data_path, cache, plan.get("subsample"), args.seed)
    import mudata as md

    prepared_data = md.read_h5mu(str(prepared))
    data_info = {"cells": int(prepared_data.n_obs), "features": {m: int(a.n_vars) for m, a in prepared_data.mod.items()},
                 "nnz": {m: int(a.X.nnz) for m, a in prepared_data.mod.items()}, "file": str(prepared)}
    del prepared_data
    log(f"matmul throughput ({plan['matmul_repeats']} repeats per shape)")
    matmul_before = matmul_peak(data_info["features"]["atac"], plan["matmul_repeats"])

    results: dict[str, Any] = {
        "command": "python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": args.quick,
        "epochs": epochs,
        "plan": plan,
        "machine": machine(),
        "versions": versions(),
        "data": data_info,
        "models": {},
        "notes": [
            ("cavachon_like trains as configs/snare.yaml says (Adam, learning rate 1e-3, batch 256, sequential: "
             "ATAC stage then RNA stage with ATAC frozen, RNA blended in over 5 epochs), without early stopping."),
            ("MultiVI trains with scvi-tools' defaults (AdamW, learning rate 1e-4, weight decay 1e-3, batch 128, KL "
             "warm-up over 50 epochs, adversarial batch mixing) without early stopping; torch uses all cores as "
             "TensorFlow does."),
            ("The size-matched cavachon_like has MultiVI's default size on this data (scvi-tools 1.4 MULTIVAE: "
             "n_hidden = min(128, sqrt(regions)) = 128, n_latent = sqrt(n_hidden) = 11, 2 encoder and 2 decoder "
             "layers): encoders and decoders of 128-128 units, dim(z) = 11, K = 2 dim(z) + 1 = 23."),
        ],
    }
    for name in models:
        if name == "multivi":
            result = train_multivi(prepared, epochs, work, args.seed)
            results["versions"].update(result["versions"])
            results["models"]["multivi"] = result
        else:
            results["models"][f"cavachon_{name}"] = train_cavachon(prepared, name, epochs, work, args.seed)
    matmul_after = matmul_peak(data_info["features"]["atac"], plan["matmul_repeats"])
    results["matmul"] = {"before": matmul_before, "after": matmul_after}
    peak = max(r["gflops"] for r in matmul_before + matmul_after)
    results["flops"] = {"peak_gflops": peak}
    for name in ("paper", "matched"):
        if f"cavachon_{name}" in results["models"]:
            results["flops"][name] = flop_summary(results["models"][f"cavachon_{name}"], peak)

    log("scoring latent spaces")
    for result in results["models"].values():
        result["scores"] = score(result, labels, args.seed)

    if not args.no_scaling:
        results["scaling"] = scaling(cache, work, plan, args.seed)
        cells = [r for r in results["scaling"] if r["n_regions"] == plan["scaling_regions"]]
        if len(cells) >= 2:
            x = np.log([r["n_cells"] for r in cells])
            y = np.log([sum(r["seconds_per_epoch"].values()) for r in cells])
            results["scaling_exponent"] = float(np.polyfit(x, y, 1)[0])
            # memory against non-zeros over the cell sweep (same model, same features)
            nnz = [sum(r["nnz"].values()) for r in cells]
            slope, intercept = np.polyfit(nnz, [r["peak_rss_bytes"] for r in cells], 1)
            results["memory_per_nonzero"] = {"bytes_per_nonzero": float(slope), "intercept_bytes": float(intercept)}
    results["targets"] = assess(results)
    results["total_seconds"] = time.perf_counter() - start
    write_json(json_path, results)
    markdown_path.write_text(render(results))
    log(f"wrote {markdown_path} and {json_path} in {results['total_seconds'] / 60:.1f} min")
    for check in results["targets"]:
        log(f"target: {check['target']}: {check['text']} -> {'met' if check['met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
