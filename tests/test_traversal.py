"""Latent traversal (paper 003, scMM pseudocells): the decoded path, the feature table and the figure.

The reference values are decoded here from the components' own layers (hierarchical encoder,
decoder, likelihood), independently of :mod:`cavachon_like.model.traversal`.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import tensorflow as tf

from cavachon_like import CAVACHON
from cavachon_like.analysis import traversal_features
from cavachon_like.model.traversal import LatentTraversal
from cavachon_like.plotting import plot_traversal

BATCHES = np.eye(2, dtype=np.float32)  # the simulator's two batches, as one-hot rows


@pytest.fixture(scope="module")
def trained(small_data, small_components_spec):
    model = CAVACHON.from_data(small_data, [dict(c) for c in small_components_spec], seed=0, pretrain_epochs=0,
                               progressive_epochs=1)
    model.compile()
    model.fit(small_data, epochs=4, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def rna_traversal(trained, small_data):
    return trained.latent_traversal(small_data, "rna")


def _decode(model, component: str, modality: str, z: np.ndarray, parents: list[np.ndarray]) -> np.ndarray:
    """Decoded means per 10,000 at the points ``z`` (n x d), averaged over both batches."""
    module = model.components[component]
    n = len(z)
    z_hat = module.hierarchical_encoder(tf.constant(z, tf.float32),
                                        [tf.constant(np.tile(p, (n, 1)), tf.float32) for p in parents])
    decoded = [module.likelihoods[modality].normalized_mean(
        module.decoders[modality](z_hat, tf.constant(np.tile(row, (n, 1)))), 1e4).numpy() for row in BATCHES]
    return np.mean(decoded, axis=0)


def test_shapes_steps_and_scale_of_a_root_latent(trained, small_data):
    traversal = trained.latent_traversal(small_data, "atac", n_steps=11, span=3.0)
    assert traversal.modalities == ["atac"] and traversal.decoded["atac"].shape == (4, 11, 120)
    assert list(traversal.features["atac"]) == list(small_data.mod["atac"].var_names)
    steps = traversal.steps
    assert steps[0] == -3.0 and steps[-1] == 3.0 and steps[5] == 0.0 and (np.diff(steps) > 0).all()
    z = trained.get_latent_representation(small_data)["z_atac"]
    np.testing.assert_allclose(traversal.center, z.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(traversal.scale, z.std(axis=0), rtol=1e-4)
    np.testing.assert_allclose(traversal.latent_values(2)[[0, -1]], z.mean(0)[2] + np.array([-3, 3]) * z.std(0)[2],
                               rtol=1e-4)
    probabilities = traversal.decoded["atac"]
    assert np.isfinite(probabilities).all() and probabilities.min() >= 0 and probabilities.max() <= 1


def test_child_pseudocells_decode_the_path_with_the_parents_at_their_mean(trained, small_data, rna_traversal):
    """Middle step = the mean latent decoded; ends = one dimension at m_d -/+ 5 s_d; the parent
    (atac) enters as the population mean of its z_hat."""
    latents = trained.get_latent_representation(small_data)
    m, s = latents["z_rna"].mean(0), latents["z_rna"].std(0)
    parent = latents["z_hat_atac"].mean(0)
    decoded = rna_traversal.decoded["rna"]
    assert decoded.shape == (4, 21, 60) and rna_traversal.steps[10] == 0.0
    middle = _decode(trained, "rna", "rna", m[None], [parent])[0]
    for d in range(4):
        np.testing.assert_allclose(decoded[d, 10], middle, rtol=1e-4, atol=1e-5)
        ends = np.stack([m, m])
        ends[:, d] += np.array([-5.0, 5.0]) * s[d]
        np.testing.assert_allclose(decoded[d, [0, -1]], _decode(trained, "rna", "rna", ends, [parent]),
                                   rtol=1e-4, atol=1e-5)
    # The parent matters: a far-off parent latent decodes other pseudocells.
    assert not np.allclose(middle, _decode(trained, "rna", "rna", m[None], [parent + 3.0])[0], rtol=1e-2)


def test_batch_average_and_one_batch(trained, small_data, rna_traversal):
    one = [trained.latent_traversal(small_data, "rna", transform_batch={"batch": f"batch{i}"}) for i in range(2)]
    np.testing.assert_allclose(rna_traversal.decoded["rna"], (one[0].decoded["rna"] + one[1].decoded["rna"]) / 2,
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(one[0].decoded["rna"], one[1].decoded["rna"])


def test_the_feature_that_changes_most_along_a_dimension_ranks_first(trained, small_data, rna_traversal):
    """Brute force on a finer grid (101 points, straight from the decoder): on the dimension where
    one gene leads most clearly, the gene whose log1p value changes most per SD must head the
    table. Ranked by |r| alone the top is instead a gene with a straight but small path (here
    24-35 of 60 genes have |r| > 0.99 on every dimension), so this fails with rank_by="r"."""
    m, s = rna_traversal.center, rna_traversal.scale
    parent = trained.get_latent_representation(small_data)["z_hat_atac"].mean(0)
    grid = np.linspace(-5, 5, 101)
    slopes, values = [], []
    for d in range(4):
        points = np.tile(m, (len(grid), 1))
        points[:, d] += grid * s[d]
        values.append(np.log1p(_decode(trained, "rna", "rna", points, [parent])))
        slopes.append(np.polyfit(grid, values[-1], 1)[0])
    leads = [np.sort(np.abs(sl))[::-1] for sl in slopes]
    gaps = [(lead[0] - lead[1]) / lead[0] for lead in leads]
    d = int(np.argmax(gaps))
    assert gaps[d] > 0.05, f"no dimension has a clear leader to test against: {gaps}"
    leader = int(np.argmax(np.abs(slopes[d])))
    names = np.asarray(small_data.mod["rna"].var_names)
    table = traversal_features(rna_traversal, top=10)
    assert len(table) == 4 * 10 and list(table.columns[:4]) == ["modality", "dim", "rank", "feature"]
    ranked = table[table.dim == d].sort_values("rank")
    expected = names[np.argsort(-np.abs(slopes[d]))[:3]]
    assert ranked.feature.iloc[0] == names[leader], (d, ranked.feature.tolist()[:3], expected)
    assert ranked.slope.iloc[0] == pytest.approx(slopes[d][leader], rel=0.05)
    assert (ranked.slope.abs().diff().dropna() <= 0).all()
    assert ranked.r.iloc[0] == pytest.approx(np.corrcoef(grid, values[d][:, leader])[0, 1], abs=0.02)
    assert np.sign(ranked.r.iloc[0]) == np.sign(ranked.lfc.iloc[0])
    ends = np.expm1(values[d][[0, -1], leader])
    pseudocount = 0.01 * rna_traversal.decoded["rna"].mean()
    assert ranked.lfc.iloc[0] == pytest.approx(np.log2((ends[1] + pseudocount) / (ends[0] + pseudocount)), rel=1e-3)
    by_r = traversal_features(rna_traversal, top=10, rank_by="r")
    assert (by_r[by_r.dim == d].r.abs().diff().dropna() <= 0).all()


def test_plot_has_one_heatmap_per_requested_dimension(rna_traversal):
    table = traversal_features(rna_traversal, top=6)
    figure = plot_traversal(rna_traversal, table, "rna", dims=[0, 2, 3], top=4)
    heatmaps = [ax for ax in figure.axes if ax.images]
    assert len(heatmaps) == 3 and len(figure.axes) == 4  # and one colour bar
    for ax, d in zip(heatmaps, [0, 2, 3]):
        top = table[table.dim == d].sort_values("rank").feature.head(4).tolist()
        assert [t.get_text() for t in ax.get_yticklabels()] == top
        assert ax.get_title().endswith(f"dimension {d}")
        assert [t.get_text() for t in ax.get_xticklabels()] == ["-5σ", "-2.5σ", "0", "+2.5σ", "+5σ"]
        # centred per feature: each row averages to zero
        np.testing.assert_allclose(np.asarray(ax.images[0].get_array()).mean(axis=1), 0, atol=1e-5)
    assert len([ax for ax in plot_traversal(rna_traversal, table, "rna").axes if ax.images]) == 4
    plt.close("all")
    with pytest.raises(KeyError, match="decodes"):
        plot_traversal(rna_traversal, table, "atac")
    with pytest.raises(ValueError, match="not in the features table"):
        plot_traversal(rna_traversal, table, "rna", dims=[7])


def test_table_on_a_known_path_with_a_real_valued_modality():
    """Hand-made paths: the slope ranks, a constant feature (r NaN) comes last, a real-valued
    modality is compared as decoded and has no fold change."""
    steps = np.linspace(-2, 2, 5)
    prot = np.stack([3 * steps, np.full(5, 7.0), -steps, -0.5 * steps], axis=-1)[None]  # 1 x 5 x 4
    rna = np.stack([np.expm1(0.5 * steps + 2), np.expm1(np.abs(steps))], axis=-1)[None]
    traversal = LatentTraversal(latent="z", steps=steps, decoded={"prot": prot, "rna": rna},
                                features={"prot": ["a", "flat", "b", "c"], "rna": ["up", "vee"]},
                                center=np.zeros(1), scale=np.ones(1), supports={"prot": "real", "rna": "counts"})
    table = traversal_features(traversal, top=4).set_index(["modality", "feature"])
    assert table.loc["prot", "rank"].sort_values().index.tolist() == ["a", "b", "c", "flat"]
    np.testing.assert_allclose(table.loc["prot"].loc[["a", "b", "c"], "slope"], [3.0, -1.0, -0.5])
    np.testing.assert_allclose(table.loc["prot"].loc[["a", "b", "c"], "r"], [1.0, -1.0, -1.0])
    assert np.isnan(table.loc[("prot", "flat"), "r"]) and table.loc["prot", "lfc"].isna().all()
    # log1p scale for counts: exactly linear for "up"; "vee" goes down and up, no slope at all
    assert table.loc[("rna", "up"), "r"] == pytest.approx(1.0) and table.loc[("rna", "up"), "slope"] == pytest.approx(0.5)
    assert table.loc[("rna", "vee"), "slope"] == pytest.approx(0.0, abs=1e-12)
    assert table.loc[("rna", "up"), "lfc"] > 0 and table.attrs["span"] == 2.0


def test_bad_arguments_are_named(trained, small_data, rna_traversal):
    with pytest.raises(KeyError, match="no latent 'protein'"):
        trained.latent_traversal(small_data, "protein")
    with pytest.raises(ValueError, match="no batch of its own"):
        trained.latent_traversal(small_data, "rna", transform_batch=None)
    with pytest.raises(ValueError, match="n_steps"):
        trained.latent_traversal(small_data, "rna", n_steps=1)
    with pytest.raises(ValueError, match="rank_by"):
        traversal_features(rna_traversal, rank_by="spearman")


def test_joint_moe_component(small_data):
    """A joint component with a mixture of experts: one path decodes both modalities, from the
    mixture's mean latent. Untrained: what is checked is the path, and training (tracing the
    stratified ELBO) would double the file's time."""
    small = {"encoder": {"units": [32, 16]}, "decoder": {"units": [16, 32]}, "latent_dim": 3}
    model = CAVACHON.from_data(small_data, [{"name": "joint", "modalities": ["atac", "rna"], "posterior": "moe",
                                             **small}], seed=0, pretrain_epochs=0)
    model.adapt(small_data)
    traversal = model.latent_traversal(small_data, "joint", n_steps=5)
    assert traversal.decoded["atac"].shape == (3, 5, 120) and traversal.decoded["rna"].shape == (3, 5, 60)
    m = model.get_latent_representation(small_data)["z_joint"].mean(0)
    np.testing.assert_allclose(traversal.center, m, rtol=1e-5, atol=1e-6)
    for modality in ("atac", "rna"):
        np.testing.assert_allclose(traversal.decoded[modality][1, 2], _decode(model, "joint", modality, m[None], [])[0],
                                   rtol=1e-4, atol=1e-5)
    table = traversal_features(traversal, top=3)
    assert list(table.modality.unique()) == ["atac", "rna"] and len(table) == 2 * 3 * 3
