"""VaDE's recipe per stage: pre-training, a GMM-initialised mixture, then the ELBO.

On the simulator each component has planted clusters of its own: ATAC comes from a parent type,
RNA from the parent type plus a child state that ATAC never sees. Each component's VaDE clusters
must recover its own planted clusters, not the other component's.
"""
from __future__ import annotations

import keras
import numpy as np
from sklearn.metrics import adjusted_rand_score

from cavachon_like import CAVACHON
from cavachon_like.analysis import degenerate_clustering


def test_each_component_recovers_its_own_planted_clusters(planted_factors_run):
    # The run (tests/conftest.py): 4 parent types, 3 child states; K = 4 for atac, 3 for rna.
    model, data = planted_factors_run
    data = data.copy()  # annotate writes into it; tests/test_dag_semantics.py shares the run
    model.annotate(data)
    parent, child = data.obs["parent_type"], data.obs["child_state"]
    atac, rna = data.obs["cluster_atac"], data.obs["cluster_rna"]
    scores = {
        "atac~parent": adjusted_rand_score(parent, atac),
        "rna~child": adjusted_rand_score(child, rna),
        "atac~child": adjusted_rand_score(child, atac),
        "rna~parent": adjusted_rand_score(parent, rna),
    }
    print({k: round(v, 3) for k, v in scores.items()})
    assert scores["atac~parent"] >= 0.9, scores
    assert scores["rna~child"] >= 0.9, scores
    # The other component's factor is independent of a component's own: ARI near 0.
    assert scores["atac~child"] < 0.1 and scores["rna~parent"] < 0.1, scores


def test_pretraining_fits_the_mixture_and_early_stopping_sees_only_the_elbo(small_data, small_components):
    # Without the end-of-stage EM: this checks the GMM initialisation (after 2 epochs the latents hold
    # little structure, and EM then rightly merges the components).
    model = CAVACHON.from_data(small_data, small_components, seed=0, pretrain_epochs=3, prior_em_iterations=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    initial = np.array(model.components["atac"].prior.means)
    stopper = keras.callbacks.EarlyStopping(monitor="loss", patience=0, restore_best_weights=True)
    history = model.fit(small_data, epochs=2, batch_size=64, callbacks=[stopper], verbose=0).history
    assert history["phase"][:3] == ["pretrain"] * 3 and history["stage"][:3] == ["atac"] * 3
    # The KL warm-up starts at weight 0 (a plain autoencoder) and ends at 1.
    assert float(model.kl_weight.numpy()) == 1.0
    # The GMM fit replaced the random means, which Adam alone would only nudge.
    assert np.abs(np.array(model.components["atac"].prior.means) - initial).max() > 0.1
    used = len(np.unique(model.get_latent_representation(small_data)["cluster_probabilities_atac"].argmax(1)))
    assert used >= 4  # of K = 9 (7 measured): the fitted mixture spreads the cells


def test_degenerate_clustering_is_reported():
    collapsed = np.array(["0"] * 990 + ["1"] * 5 + ["2"] * 5)
    message = degenerate_clustering(collapsed, "atac")
    assert message and "'atac'" in message and "only 1 cluster" in message and "pretrain_epochs" in message
    healthy = np.repeat(np.arange(5).astype(str), 200)
    assert degenerate_clustering(healthy, "atac") is None
