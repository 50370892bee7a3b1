"""2-D embeddings of latent spaces for plotting."""
from __future__ import annotations

import numpy as np


def embed_2d(z: np.ndarray, method: str = "umap", seed: int = 0) -> np.ndarray:
    """Embed ``z`` (cells x dims) in two dimensions with UMAP or PCA."""
    z = np.asarray(z, dtype=np.float32)
    if z.shape[1] <= 2:
        return np.pad(z, ((0, 0), (0, 2 - z.shape[1])))
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(z)
    if method == "umap":
        import umap

        # A seeded UMAP is single-threaded anyway; saying so keeps it from warning.
        return umap.UMAP(n_components=2, random_state=seed, n_jobs=1, n_neighbors=min(15, len(z) - 1)).fit_transform(z)
    raise ValueError(f"unknown embedding method {method!r}; expected 'umap' or 'pca'.")
