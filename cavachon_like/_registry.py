"""Name -> class registries, so YAML files can name built-in and user classes alike."""
from __future__ import annotations

from typing import Any


class Registry:
    """A mapping from short names to classes of one kind.

    Base classes own one registry each and register every subclass that sets an
    ``alias`` class attribute (see :func:`register_subclass`); ``alias`` rather than
    ``name`` because Keras layers already use ``name`` per instance. A user's module is
    therefore available from YAML as soon as it is imported, e.g. through the
    config's ``plugins`` list, without touching the core.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type] = {}

    def register(self, name: str, cls: type) -> type:
        """Make ``cls`` available under ``name`` (case-insensitive).

        Registering the same class again (or a class of the same qualified name, as when a
        module is reloaded) is allowed; taking a name another class holds is not.

        Parameters
        ----------
        name
            The alias YAML files use.
        cls
            The class it names.

        Returns
        -------
        type
            ``cls``, so that the method can decorate a class.

        Raises
        ------
        ValueError
            When another class already holds ``name``.
        """
        key = name.lower()
        existing = self._classes.get(key)
        if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
            raise ValueError(
                f"{self.kind} name {name!r} is already taken by {existing.__module__}.{existing.__qualname__}; "
                f"choose another `alias` for {cls.__module__}.{cls.__qualname__}."
            )
        self._classes[key] = cls
        return cls

    def get(self, name: str | type) -> type:
        """The class registered under ``name``; a class is returned as it is.

        Parameters
        ----------
        name
            An alias (case-insensitive) or a class.

        Returns
        -------
        type

        Raises
        ------
        KeyError
            For an unknown alias; the message lists the known ones.
        """
        if isinstance(name, type):
            return name
        try:
            return self._classes[str(name).lower()]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}. A custom {self.kind} "
                f"registers itself by subclassing and setting `alias`; list its module under `plugins` in YAML."
            ) from None

    def create(self, name: str | type, **kwargs: Any) -> Any:
        """An instance of the class :meth:`get` returns for ``name``, built with ``kwargs``."""
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        """The registered aliases, sorted."""
        return sorted(self._classes)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._classes


def register_subclass(registry: Registry, cls: type) -> None:
    """Register ``cls`` under ``cls.alias`` when the class itself defines ``alias``."""
    alias = cls.__dict__.get("alias")
    if isinstance(alias, str) and alias:
        registry.register(alias, cls)
