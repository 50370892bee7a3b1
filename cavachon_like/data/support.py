"""What values a modality's likelihood can model, so the data can be checked before training.

Likelihoods declare their support (``Likelihood.support``) and register it here under
their alias when they are defined, a user's custom likelihood included; the data layer
then validates a modality against the support of the likelihood it names.
"""
from __future__ import annotations

#: Supports and the values they accept.
SUPPORTS = {
    "counts": "non-negative integers (raw counts)",
    "binary": "non-negative values, read as present (> 0) or absent",
    "real": "any finite value",
}

_BY_LIKELIHOOD: dict[str, str] = {}


def register_support(likelihood: str, support: str) -> None:
    """Record that the likelihood named ``likelihood`` models values of ``support``."""
    if support not in SUPPORTS:
        raise ValueError(f"likelihood {likelihood!r} declares support {support!r}; expected one of {list(SUPPORTS)}.")
    _BY_LIKELIHOOD[likelihood.lower()] = support


def support_of(likelihood: str | None) -> str | None:
    """The support registered for a likelihood name, or None when it is unknown."""
    return None if likelihood is None else _BY_LIKELIHOOD.get(str(likelihood).lower())
