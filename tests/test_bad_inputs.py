"""The bad-input catalogue (issue 13) run through the command line.

Every row asserts the exit code (2: a clean one-line input error; 0: the run goes on with
a warning; 1: a bug, with its traceback) and that the message names the culprit. Errors
must come before training, so no row leaves a trained model behind. Data are tiny and
simulated; only two rows train (one epoch of an 8-unit network). The cases that
tests/test_config_cli.py checks without the command line (schema errors) stay there.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml
from test_config_cli import CONFIGS

from cavachon_like.cli import main
from cavachon_like.data import simulate
from cavachon_like.data.multimodality import no_pull
from cavachon_like.errors import InputError

TINY = {"encoder": {"units": [8]}, "decoder": {"units": [8]}, "latent_dim": 2}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Data files, good and bad, shared by the rows."""
    folder = tmp_path_factory.mktemp("inputs")
    paths = {name: folder / name for name in ("ok.h5mu", "three.h5mu", "cut.h5mu", "rna.h5ad", "no_atac.h5mu",
                                               "counts.csv", "cite.h5mu", "library.h5mu")}
    data = simulate(n_cells=60, n_atac=30, n_rna=12, n_batches=2, seed=0)
    data.write_h5mu(paths["ok.h5mu"])
    data[:3].write_h5mu(paths["three.h5mu"])
    content = paths["ok.h5mu"].read_bytes()
    paths["cut.h5mu"].write_bytes(content[: len(content) // 2])
    data.modality("rna").write_h5ad(paths["rna.h5ad"])
    paths["counts.csv"].write_text("cell,Actb\nc1,3\n")
    cells = pd.DataFrame(index=data.obs_names)
    with no_pull():
        md.MuData({"rna": ad.AnnData(data.modality("rna").X, obs=cells.copy(), var=data.modality("rna").var),
                   "atac": ad.AnnData(sp.csr_matrix((60, 0), dtype=np.float32), obs=cells.copy())}
                  ).write(paths["no_atac.h5mu"])
    _cite_seq(60).write(paths["cite.h5mu"])
    x = data.modality("rna").X.tolil()
    x[[0, 2], :] = 0
    x[1, 0] = 1e9
    data.modality("rna").X = x.tocsr()
    data.write_h5mu(paths["library.h5mu"])
    return paths


def _cite_seq(n_cells: int) -> md.MuData:
    """CITE-seq-like data whose RNA and ADT modalities share the names CD36, CD69 and HLA-E."""
    rng = np.random.default_rng(1)
    cells = pd.DataFrame(index=[f"cell{i:03d}" for i in range(n_cells)])
    genes = ["CD36", "CD69", "HLA-E", *(f"Gene{i}" for i in range(9))]
    rna = ad.AnnData(sp.csr_matrix(rng.poisson(3.0, (n_cells, len(genes))).astype(np.float32)),
                     obs=cells.copy(), var=pd.DataFrame(index=genes))
    adt = ad.AnnData(sp.csr_matrix(rng.poisson(30.0, (n_cells, 4)).astype(np.float32)),
                     obs=cells.copy(), var=pd.DataFrame(index=["CD36", "CD69", "HLA-E", "CD4"]))
    with no_pull(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # mudata's own "var_names are not unique"
        return md.MuData({"rna": rna, "adt": adt})


def _config(path: Path | None, modality: str = "rna", **sections: dict) -> dict:
    """A one-component config on the file ``path`` for one training epoch of a tiny network."""
    config = {
        "data": {"path": None if path is None else str(path)},
        "model": {"components": [{"name": modality, "modalities": [modality], **TINY}],
                  "pretrain_epochs": 0, "progressive_epochs": 1},
        "training": {"epochs": 1, "batch_size": 32, "verbose": 0},
        "output": {"embedding": "pca"},
    }
    for section, values in sections.items():
        config[section] = {**config[section], **values}
    return config


def _train(tmp_path: Path, capsys, config: dict, *options: str, out: Path | None = None) -> tuple[int, str, Path]:
    """Run ``cavachon-like train`` on ``config``; exit code, stderr and the output folder."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = out or tmp_path / "run"
    capsys.readouterr()
    code = main(["train", str(path), "--out", str(out), *options])
    return code, capsys.readouterr().err, out


ROWS = {
    # row: (config from the files, expected parts of the message)
    "typo in label_key": (lambda f: _config(f["ok.h5mu"], data={"label_key": "celltype"}),
                          ["no obs column 'celltype'"]),
    "typo in color_by": (lambda f: _config(f["ok.h5mu"], output={"color_by": ["bacth"]}), ["no obs column 'bacth'"]),
    "early_stopping: {patiense: 3}": (lambda f: _config(f["ok.h5mu"], training={"early_stopping": {"patiense": 3}}),
                                      ["patiense"]),
    "reduce_lr: {min_lr: 1e-5} (YAML: a string)": (
        lambda f: _config(f["ok.h5mu"], training={"reduce_lr": {"min_lr": "1e-5"}}),
        ["training.reduce_lr.min_lr", "'1e-5'", "1.0e-5"]),
    "encoder {unit: 64}": (lambda f: {**_config(f["ok.h5mu"]), "model": {"components": [
        {"name": "rna", "modalities": ["rna"], "encoder": {"unit": 64}}]}}, ["component 'rna'", "'unit'"]),
    "posterior: moe on one modality": (lambda f: {**_config(f["ok.h5mu"]), "model": {"components": [
        {"name": "rna", "modalities": ["rna"], "posterior": "moe"}]}}, ["component 'rna'", "posterior 'moe'",
                                                                         "one modality ('rna')"]),
    "truncated .h5mu": (lambda f: _config(f["cut.h5mu"]), ["cut.h5mu", "truncated"]),
    "a text file as data": (lambda f: _config(f["counts.csv"]), ["counts.csv", "not an HDF5 file"]),
    "a modality with 0 features": (lambda f: _config(f["no_atac.h5mu"], modality="atac",
                                                     data={"modalities": {"atac": {"likelihood": "bernoulli"},
                                                                          "rna": {"likelihood": "nb"}}}),
                                   ["modality 'atac' has no features"]),
    "QC removing every feature": (lambda f: _config(f["ok.h5mu"], data={"qc": [
        {"step": "filter_features", "modality": "rna", "min_cells": 1000}]}),
                                  ["would remove all 12 features of modality 'rna'"]),
    "3 cells": (lambda f: _config(f["three.h5mu"]), ["3 cells"]),
    "a validation split of 0 cells": (lambda f: _config(f["ok.h5mu"], training={"validation_split": 0.005}),
                                      ["validation fraction of 0.005 of 60 cells leaves 0 cells for validation"]),
    "a validation split of all cells": (lambda f: _config(f["ok.h5mu"], training={"validation_split": 0.999}),
                                        ["leaves 60 cells for validation and 0 for training"]),
}


@pytest.mark.parametrize("row", list(ROWS))
def test_bad_input_is_a_clean_error_before_training(row, files, tmp_path, capsys):
    make, expected = ROWS[row]
    code, err, out = _train(tmp_path, capsys, make(files))
    assert code == 2, err
    assert err.count("cavachon-like: error: ") == 1 and "Traceback" not in err
    for part in expected:
        assert part in err, (part, err)
    assert not (out / "model.keras").exists()


def test_an_h5ad_where_an_h5mu_is_expected(files, tmp_path, capsys):
    code, err, _ = _train(tmp_path, capsys, _config(None), "--data", str(files["rna.h5ad"]))
    assert code == 2 and str(files["rna.h5ad"]) in err
    assert "holds a single AnnData" in err and "data.h5ad" in err


def test_a_config_that_needs_data_but_gets_none(tmp_path, capsys):
    code = main(["train", str(CONFIGS / "snare.yaml"), "--out", str(tmp_path / "snare")])
    assert code == 2 and "no data" in capsys.readouterr().err
    assert not (tmp_path / "snare" / "model.keras").exists()


def test_out_not_writable(files, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, err, _ = _train(tmp_path, capsys, _config(files["ok.h5mu"]), out=blocker / "run")
    assert code == 2 and "cannot write to the output folder" in err and str(blocker / "run") in err


def test_shared_feature_names_train_and_an_earlier_run_needs_overwrite(files, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="cavachon_like")
    config = _config(files["cite.h5mu"], modality="adt", data={
        "modalities": {"rna": {"likelihood": "nb"}, "adt": {"likelihood": "nb"}},
        "qc": [{"step": "filter_cells", "modality": "rna", "min_features": 5},
               {"step": "filter_features", "modality": "adt", "min_cells": 3}]})
    code, err, out = _train(tmp_path, capsys, config)
    assert code == 0, err
    reports = [r.getMessage() for r in caplog.records if "feature names were made unique" in r.getMessage()]
    assert len(reports) == 1, "reported once, not at every QC step"
    assert "modality 'adt' shares 3 feature names with modality 'rna'" in reports[0] and "'CD36'" in reports[0]
    result = md.read_h5mu(out / "result.h5mu")
    assert list(result.mod["adt"].var_names) == ["adt:CD36", "adt:CD69", "adt:HLA-E", "CD4"]
    assert "z_adt" in result.obsm
    # the same --out again: refused before anything is read or trained, naming what is there
    before = (out / "model.keras").stat().st_mtime_ns
    code, err, _ = _train(tmp_path, capsys, config, out=out)
    assert code == 2 and "already holds a run" in err and "model.keras" in err and "--overwrite" in err
    assert (out / "model.keras").stat().st_mtime_ns == before


def test_zero_and_extreme_library_sizes_warn_once_and_overwrite_replaces_a_run(files, tmp_path, capsys, caplog):
    out = tmp_path / "run"
    (out / "analysis").mkdir(parents=True)
    (out / "analysis" / "stale.csv").write_text("old")
    (out / "model.keras").write_text("old")
    caplog.set_level(logging.INFO, logger="cavachon_like")
    code, err, _ = _train(tmp_path, capsys, _config(files["library.h5mu"]), "--overwrite", out=out)
    assert code == 0, err
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "'rna'" in r.getMessage()]
    zero = [m for m in messages if "have no counts at all" in m]
    extreme = [m for m in messages if "extreme library size" in m]
    assert len(zero) == 1 and "2 of 60 cells" in zero[0] and "'cell000000', 'cell000002'" in zero[0]
    assert len(extreme) == 1 and "1 of 60 cells" in extreme[0] and "'cell000001' (1e+09)" in extreme[0]
    assert not (out / "analysis").exists() and (out / "model.keras").stat().st_size > 100


def test_analyze_without_a_run_is_an_input_error(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nothing")]) == 2
    assert "lacks ['result.h5mu', 'model.keras']" in capsys.readouterr().err


def test_a_bug_exits_1_with_its_traceback(files, tmp_path, capsys, monkeypatch):
    """A ValueError raised in training is a bug, not bad input: never the one-line exit 2.

    Run in-process (a subprocess would spend most of this module's time importing
    TensorFlow): either ``main`` lets the exception out, so Python prints its traceback
    and exits with 1, or it prints the traceback itself and returns 1.
    """
    from cavachon_like.model import CAVACHON

    def broken_fit(*args, **kwargs):
        raise ValueError("a bug in training")

    monkeypatch.setattr(CAVACHON, "fit", broken_fit)
    try:
        code, err, _ = _train(tmp_path, capsys, _config(files["ok.h5mu"]))
    except ValueError as error:
        assert not isinstance(error, InputError) and str(error) == "a bug in training"
        assert "cavachon-like: error" not in capsys.readouterr().err
    else:
        assert code == 1 and "Traceback (most recent call last)" in err and "a bug in training" in err
