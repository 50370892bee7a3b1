"""Quickstart, notebook style: simulate paired data, train atac -> rna, read the latents.

Run as a script (``python examples/quickstart.py``) or paste the cells into a notebook.
"""
# %% Data: paired ATAC-like (Bernoulli) and RNA-like (ZINB) counts with a known DAG
import keras
import numpy as np

import cavachon_like as cl

data = cl.simulate(n_cells=2000, n_batches=3, seed=0)
print(data)

# %% Model: chromatin accessibility -> expression
small = {"latent_dim": 8, "encoder": {"units": [256, 128]}, "decoder": {"units": [128, 256]}}
model = cl.CAVACHON.from_data(
    data,
    components=[
        {"name": "atac", "modalities": ["atac"], **small},
        {"name": "rna", "modalities": ["rna"], "parents": ["atac"], **small},
    ],
    seed=0,
)
model.compile(optimizer=keras.optimizers.Adam(1e-3))

# %% Train: one stage per component, in topological order
history = model.fit(
    data,
    epochs=15,
    batch_size=128,
    validation_split=0.1,
    callbacks=[keras.callbacks.EarlyStopping(patience=5, restore_best_weights=True)],
)

# %% Latents and clusters, written in scverse conventions
model.annotate(data)
print({key: value.shape for key, value in data.obsm.items()})
print(data.obs[["cluster_atac", "cluster_rna"]].value_counts().head())

# %% The DAG at work: the child's own latent holds the child-only factor, ATAC's has none of it.
# After these 15 epochs z_rna still carries the parent factor too; with longer training (60 epochs
# per stage in tests/test_dag_semantics.py) it sheds it (R^2 0.90 -> 0.12) as the frozen parent explains it.
from sklearn.linear_model import LinearRegression  # noqa: E402

for name in ("z_atac", "z_rna"):
    for factor in ("true_parent", "true_child"):
        r2 = LinearRegression().fit(data.obsm[name], data.obsm[factor]).score(data.obsm[name], data.obsm[factor])
        print(f"R^2 of {factor} from {name}: {r2:.2f}")

# %% Save and reload
model.save("quickstart.keras")
reloaded = keras.models.load_model("quickstart.keras")
assert np.array_equal(reloaded.get_latent_representation(data)["z_rna"], data.obsm["z_rna"])
