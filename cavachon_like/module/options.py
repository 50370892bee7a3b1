"""The checks a component's options get before any module is built, so a bad option is named
in one line rather than failing inside a layer."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .spec import per_modality

#: How q(z|x) is formed (``posterior:`` of a component in YAML).
POSTERIORS = ("concat", "poe", "moe", "vq", "representation")
#: The posteriors built from one encoder (expert) per modality.
EXPERT_NAMES = ("poe", "moe", "vq")


def check_options(name: str, *, modalities: Sequence[str], posterior: str, conditioned_on: str,
                  parents: Sequence[str], parent_dims: Sequence[int], encoder: Any,
                  quantizer: Mapping[str, Any] | None, representation: Mapping[str, Any] | None,
                  expert_alignment: float) -> None:
    """Raise a ValueError, naming component ``name`` and the option, for options that do not
    fit together (an option of another posterior, a missing table size, an encoder spec keyed
    by modality where the posterior has one encoder for all)."""
    where = f"component {name!r}"
    if conditioned_on not in ("z_hat", "z"):
        raise ValueError(f"{where}: conditioned_on must be 'z_hat' or 'z', got {conditioned_on!r}.")
    if posterior not in POSTERIORS:
        raise ValueError(f"{where}: posterior must be one of {POSTERIORS}, got {posterior!r}.")
    if quantizer and posterior != "vq":
        raise ValueError(f"{where}: quantizer options apply to posterior: vq, not {posterior!r}.")
    if representation and posterior != "representation":
        raise ValueError(f"{where}: representation options apply to posterior: representation, not {posterior!r}.")
    if posterior == "representation" and not (representation or {}).get("n_cells"):
        raise ValueError(f"{where}: posterior: representation learns one latent per cell and needs "
                         "representation: {n_cells: ...}; CAVACHON.from_data(data, ...) fills it in from the data.")
    if expert_alignment and posterior not in ("poe", "moe"):
        raise ValueError(f"{where}: expert_alignment applies to posterior: poe or moe, not {posterior!r}"
                         + (" (vq has quantizer: {alignment: ...})." if posterior == "vq" else "."))
    if expert_alignment < 0:
        raise ValueError(f"{where}: expert_alignment must be >= 0, got {expert_alignment}.")
    if len(parents) != len(parent_dims):
        raise ValueError(f"{where}: {len(parents)} parents but {len(parent_dims)} parent_dims.")
    if posterior not in EXPERT_NAMES and per_modality(encoder, modalities, f"{where}: encoder"):
        raise ValueError(f"{where}: posterior {posterior!r} has no encoder per modality, so the encoder spec cannot "
                         "be keyed by modality; per-modality encoders are the experts of posterior: poe, moe or vq.")
