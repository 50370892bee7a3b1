"""Turning YAML/dict module specs (``{"class": alias, **kwargs}``) into objects."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._registry import Registry


def split_spec(spec: str | dict | None, default: str) -> tuple[str, dict[str, Any]]:
    """Return ``(alias, kwargs)`` from ``None``, an alias, or a dict with a ``class`` key."""
    if spec is None:
        return default, {}
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, dict):
        kwargs = dict(spec)
        return str(kwargs.pop("class", default)), kwargs
    raise TypeError(f"a module spec is an alias string or a dict with a 'class' key, got {type(spec).__name__}.")


def build_from_spec(registry: Registry, spec: str | dict | None, default: str, defaults: dict[str, Any] | None = None,
                    **kwargs: Any) -> Any:
    """Instantiate ``spec`` from ``registry``; ``kwargs`` are the values the component owns,
    ``defaults`` those it chooses unless the spec sets them."""
    alias, user_kwargs = split_spec(spec, default)
    clash = sorted(set(user_kwargs) & set(kwargs))
    if clash:
        raise ValueError(f"{registry.kind} spec sets {clash}, which the component sets itself; remove them.")
    cls = registry.get(alias)
    user_kwargs = {**(defaults or {}), **user_kwargs}
    try:
        return cls(**user_kwargs, **kwargs)
    except (TypeError, ValueError) as error:  # Keras layers reject unknown arguments with a ValueError
        raise type(error)(f"cannot build {registry.kind} {alias!r} from {user_kwargs}: {error}") from None


def per_modality(spec: str | dict | None, modalities: Sequence[str], kind: str) -> dict[str, str | dict | None] | None:
    """One module spec per modality when ``spec`` is keyed by modality names, else None.

    ``{rna: {units: [500, 500]}, atac: {units: [100, 100]}}`` gives each listed modality its
    own spec (modalities it does not list get the default); any other spec (an alias, or a
    dict with ``class`` and keyword arguments) is one spec for every modality. A dict that
    mixes modality names with other keys is ambiguous and raises a ValueError naming both.
    """
    if not isinstance(spec, dict) or not spec:
        return None
    named = sorted(set(spec) & set(modalities))
    if not named:
        return None
    others = sorted(set(spec) - set(modalities))
    if others:
        raise ValueError(f"{kind} spec mixes modality names {named} with other keys {others}; give either one spec "
                         f"for every modality or one per modality ({{{named[0]}: {{units: [...]}}, ...}}).")
    return {m: spec.get(m) for m in modalities}
