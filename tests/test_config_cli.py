"""YAML configuration errors and the `cavachon-like train` command end to end."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from cavachon_like.cli import main
from cavachon_like.config import SCHEMA, ConfigError, load_config, validate_config
from cavachon_like.config.runner import MIN_STEPS_PER_EPOCH, batch_size_for, pretrain_epochs_for

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
COMPONENTS = [{"name": "a", "modalities": ["atac"]}]


def test_shipped_configs_validate(snare_path):
    demo = load_config(CONFIGS / "demo.yaml")
    assert demo["data"]["simulate"]["n_cells"] == 2000
    snare = load_config(CONFIGS / "snare.yaml", {"data.path": str(snare_path)})
    names = [c["name"] for c in snare["model"]["components"]]
    assert names == ["atac", "rna"] and snare["model"]["components"][1]["parents"] == ["atac"]
    assert snare["data"]["modalities"]["atac"]["likelihood"] == "bernoulli_depth"
    assert snare["data"]["modalities"]["rna"]["likelihood"] == "zinb"


def test_convnet_configs_compare_like_with_like(snare_path):
    """The ConvNet-VAE config and its fully connected counterpart differ in the modules only, and the
    gene table they bin RNA with resolves from the config file's folder, whatever the working folder."""
    conv, fc = (load_config(CONFIGS / name, {"data.path": str(snare_path)})
                for name in ("convnet.yaml", "convnet_fc.yaml"))
    assert conv["data"] == fc["data"] and conv["training"] == fc["training"]
    binning = conv["data"]["qc"][-1]
    assert binning["step"] == "bin_genome" and Path(binning["gene_table"]).is_absolute()
    assert Path(binning["gene_table"]).exists()
    (conv_component,), (fc_component,) = conv["model"]["components"], fc["model"]["components"]
    assert conv_component["encoder"]["class"] == conv_component["decoder"]["class"] == "conv1d"
    assert fc_component["encoder"]["class"] == fc_component["decoder"]["class"] == "mlp"
    differing = {k for k in conv_component if conv_component[k] != fc_component.get(k)}
    assert differing == {"encoder", "decoder"}


@pytest.mark.parametrize(
    "config, message",
    [
        ({"model": {"components": COMPONENTS}, "trainig": {}}, r"trainig: unknown key; did you mean 'training'\?"),
        ({"model": {"components": COMPONENTS}, "training": {"epochs": "ten"}}, r"training.epochs: expected int, got str"),
        ({"model": {"components": COMPONENTS}, "training": {"epochs": True}}, r"training.epochs: expected int"),
        ({"model": {"components": COMPONENTS}, "data": {"path": "nowhere.h5mu"}}, r"data.path: file not found"),
        ({"model": {}}, r"model.components: required"),
        ({"model": {"components": [{"name": "a"}]}}, r"model.components\[0\].modalities: required"),
        ({"model": {"components": COMPONENTS}, "data": {"modalities": {"rna": {"likelihod": "zinb"}}}},
         r"data.modalities.rna.likelihod: unknown key"),
        ({"model": {"components": COMPONENTS}, "plugins": ["no_such_module_xyz"]}, r"plugins: cannot import"),
        ({"model": {"components": COMPONENTS},
          "data": {"qc": [{"step": "bin_genome", "modality": "atac", "gene_table": "genes.tsv.gz", "genes": "atac"}]}},
         r"data.qc\[0\].gene_table: file not found: .*genes.tsv.gz \(relative paths are read from the config file"),
    ],
)
def test_config_errors_name_the_key(config, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        validate_config(config, base=tmp_path)


def test_missing_config_file_and_cli_error_exit(tmp_path, capsys):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": {"components": COMPONENTS}, "training": {"epochs": 0}}))
    assert main(["train", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "training.epochs: must be at least 1" in capsys.readouterr().err


def test_cli_train_then_analyze(tmp_path, capsys):
    config = yaml.safe_load((CONFIGS / "demo.yaml").read_text())
    config["data"]["simulate"].update(n_cells=400, n_atac=150, n_rna=80)
    config["output"]["embedding"] = "pca"
    config["model"]["pretrain_epochs"] = 2  # the pre-training and mixture-fit path, not its default 10 epochs
    config["training"]["min_pretrain_steps"] = 0  # exactly 2, however few steps an epoch takes
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    assert main(["train", str(path), "--out", str(out), "--epochs", "2", "--seed", "5"]) == 0
    for name in ("result.h5mu", "model.keras", "history.csv", "latent.png"):
        assert (out / name).stat().st_size > 0, name
    history = pd.read_csv(out / "history.csv")
    assert list(history["stage"].unique()) == ["atac", "rna"]
    import mudata

    result = mudata.read_h5mu(out / "result.h5mu")
    for key in ("z_atac", "z_rna", "z_hat_atac", "z_hat_rna", "cluster_probabilities_rna"):
        assert key in result.obsm, key
    assert "cluster_atac" in result.obs and "run" in result.uns["cavachon_like"]

    # analyze reads the run folder and adds tables and figures
    gmt = tmp_path / "sets.gmt"
    genes = list(result.mod["rna"].var_names)
    gmt.write_text("".join(f"SET{i}\tdesc\t" + "\t".join(genes[i * 20:(i + 1) * 20]) + "\n" for i in range(4)))
    analysis = tmp_path / "analysis"
    args = ["analyze", str(out), "--out", str(analysis), "--group", "P0_C1", "--draws", "20", "--steps", "4",
            "--permutations", "20", "--embedding", "pca", "--gene-sets", str(gmt)]
    assert main(args) == 0
    for name in ("clusters_rna.csv", "cluster_summary_rna.csv", "metrics.csv", "neighbourhood_z_hat_rna.csv",
                 "neighbourhood.png", "attribution_rna.csv", "attribution_by_cluster_rna.png", "attribution_by_label_rna.csv", "de_rna_P0_C1.csv",
                 "volcano_rna_P0_C1.png", "gsea_rna_P0_C1.csv", "gsea_rna_P0_C1.png", "gsea_running_rna_P0_C1.png",
                 "ora_rna_P0_C1.csv", "de_summary.csv", "attribution_features_label_rna_rna.csv",
                 "latent_atac.png", "latent_rna.png", "report.html"):
        assert (analysis / name).stat().st_size > 0, name
    metrics = pd.read_csv(analysis / "metrics.csv", index_col=0)
    assert list(metrics.index) == ["z_atac", "z_rna", "z_hat_rna", "z_atac+rna"]
    de = pd.read_csv(analysis / "de_rna_P0_C1.csv", index_col=0)
    assert len(de) == len(genes) and {"log_bayes_factor", "lfc_median", "is_de", "expected_fdr"} <= set(de.columns)
    html = (analysis / "report.html").read_text()
    assert "volcano plot, P0_C1 vs rest" in html and html.count("data:image/png;base64,") >= 8
    capsys.readouterr()
    assert main(["analyze", str(out), "--group", "nope", "--out", str(analysis)]) == 2
    assert "has no group ['nope']" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "missing")]) == 2
    assert "lacks ['result.h5mu', 'model.keras']" in capsys.readouterr().err


BINNED = {"kind": "binned", "n_cells": 300, "channels": ["atac", "rna"], "n_batches": 2,
          "chromosome_bins": [300, 200, 100]}


@pytest.mark.parametrize(("name", "encoder", "prior"), [("scmm", "MixtureOfExperts", "LaplacePrior"),
                                                        ("poe", "ProductOfExperts", "StandardNormalPrior"),
                                                        ("cvqvae", "QuantizedExperts", "StandardNormalPrior"),
                                                        ("convnet", "Conv1DEncoder", "StandardNormalPrior"),
                                                        ("multidgd", "LearnedRepresentation",
                                                         "MixtureGaussianPrior")])
def test_seed_system_configs_train_on_simulated_stand_ins(name, encoder, prior, tmp_path):
    """The seed-system configs as shipped, with small simulated data in place of SNARE-seq (and no
    SNARE-specific QC; binned channels for the ConvNet): they build, train end to end and reload."""
    import keras

    config = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    simulated = BINNED if name == "convnet" else {"n_cells": 300, "n_batches": 2, "n_atac": 120, "n_rna": 60}
    config["data"].update(path=None, qc=[], simulate=simulated)
    config["output"]["embedding"] = "pca"
    pretrain = config["model"]["pretrain_epochs"] = min(config["model"].get("pretrain_epochs", 0), 2)
    config["training"]["min_pretrain_steps"] = 0
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    assert main(["train", str(path), "--out", str(out), "--epochs", "3"]) == 0
    model = keras.saving.load_model(out / "model.keras")
    (joint,) = model.components.values()
    assert type(joint.encoder).__name__ == encoder and type(joint.prior).__name__ == prior
    history = pd.read_csv(out / "history.csv")
    assert len(history) == 3 + pretrain and history["loss"].notna().all()


def test_batch_size_is_lowered_only_where_an_epoch_would_take_too_few_steps(caplog):
    caplog.set_level("INFO", logger="cavachon_like.config.runner")
    training = {"batch_size": 256, "validation_split": 0.1}
    assert batch_size_for(training, 10_309) == 256  # SNARE-seq: 36 steps per epoch as configured
    small = batch_size_for(training, 500)  # 450 training cells: 2 steps at 256
    assert small == 450 // MIN_STEPS_PER_EPOCH and 450 // small >= MIN_STEPS_PER_EPOCH
    assert "lowered to 28" in caplog.text
    assert batch_size_for({"batch_size": 256, "validation_split": 0.0}, 5) == 1


def test_pretraining_is_lengthened_only_where_it_would_take_too_few_steps(caplog):
    caplog.set_level("INFO", logger="cavachon_like.config.runner")
    minimum = SCHEMA["training"]["min_pretrain_steps"][1]
    config = {"model": {"pretrain_epochs": 10},
              "training": {"batch_size": 256, "validation_split": 0.1, "min_pretrain_steps": minimum}}
    assert pretrain_epochs_for(config, 10_309) == 10  # SNARE-seq: 37 steps per epoch, 370 in all
    assert "raised" not in caplog.text
    small = pretrain_epochs_for(config, 500)  # 450 training cells at batch 28: 17 steps per epoch
    assert small * 17 >= minimum > (small - 1) * 17
    assert f"raised to {small}" in caplog.text
    assert pretrain_epochs_for({**config, "model": {"pretrain_epochs": 0}}, 500) == 0  # the paper's random start
    assert pretrain_epochs_for({**config, "model": {"pretrain_epochs": 50}}, 500) == 50
    exactly = {**config, "training": {**config["training"], "min_pretrain_steps": 0}}
    assert pretrain_epochs_for(exactly, 500) == 10  # as configured
