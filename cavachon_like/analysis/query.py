"""``cavachon-like map-query``: map a new data set into a trained run (scArches-style surgery, see
:func:`cavachon_like.model.query.map_query`) and write what it gives."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..model.mapping import DEFAULT_QUERY_NEIGHBORS, QueryMapping, align_features
from ..model.query import map_query


def map_query_run(run_dir: str | Path, data_path: str | Path, out: str | Path | None = None,
                  label_key: str | None = None, model_out: str | Path | None = None,
                  **options: Any) -> dict[str, Any]:
    """``cavachon-like map-query``: map the cells of ``data_path`` into a ``train`` run's model.

    The reference is the run's own cells (``result.h5mu``) and the labels its
    ``label_key`` column (default the run's ``data.label_key``; none: no transfer). The
    query is read with the model's likelihoods and batch columns; the mapping
    (:meth:`QueryMapping.annotate <cavachon_like.model.QueryMapping.annotate>`) is
    written into it, to ``out`` (default ``RUN_DIR/query.h5mu``), and the extended model to
    ``model_out`` when given. ``options`` go to :func:`map_query`. Problems with the
    input are raised as :class:`~cavachon_like.errors.InputError` before any training.

    Returns
    -------
    dict
        ``path``, ``model_path`` (or None), ``written`` (the keys written), ``mapping``.
    """
    from ..atomic import write_atomically
    from ..data import read_h5mu
    from ..errors import input_phase
    from .report import load_run

    with input_phase():
        model, run, config = load_run(run_dir)
        if label_key is None:
            label_key = (config.get("data") or {}).get("label_key")
        names = model.modality_names
        # the run was written with the likelihoods the model was trained with
        query = read_h5mu(data_path, likelihoods={m: run.modality(m).likelihood for m in names},
                          batch_key={m: model.batch_keys(m) for m in names})
        # the checks of map_query, here so that they surface as input errors
        aligned = align_features(query, run, reindex=bool(options.get("reindex")), modalities=names)
        QueryMapping.check_options(model, run if label_key else None, label_key, options.get("latent"),
                                   options.get("n_neighbors", DEFAULT_QUERY_NEIGHBORS))
        model.check_data(aligned)
    mapping = map_query(model, query, run if label_key else None, label_key, **options)
    path = Path(out) if out is not None else Path(run_dir) / "query.h5mu"
    written = mapping.annotate(query)
    write_atomically(path, query.write)
    model_path = None
    if model_out is not None:
        model_path = Path(model_out)
        write_atomically(model_path, mapping.model.save)
    return {"path": path, "model_path": model_path, "written": written, "mapping": mapping}
