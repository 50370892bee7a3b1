"""The user-given DAG of components: validation and topological order."""
from __future__ import annotations

import graphlib
from collections.abc import Iterable, Mapping, Sequence


class ComponentGraph:
    """Directed acyclic graph over components, each holding one or more modalities.

    Parents may be named by component or by a modality that a component holds, so
    ``rna: {parents: [atac]}`` works whether ``atac`` is a component or a modality.
    All problems are reported together, each naming what is wrong, before any layer
    is built.

    Parameters
    ----------
    parents
        ``{component: [parent, ...]}`` in the user's order (ties in the topological
        order keep this order, so the training plan is deterministic).
    modalities
        ``{component: [modality, ...]}``.
    """

    def __init__(self, parents: Mapping[str, Sequence[str]], modalities: Mapping[str, Sequence[str]]) -> None:
        errors: list[str] = []
        owner: dict[str, str] = {}
        for component, mods in modalities.items():
            if not mods:
                errors.append(f"component {component!r} holds no modality.")
            for mod in mods:
                if mod in owner and owner[mod] != component:
                    errors.append(
                        f"modality {mod!r} is claimed by components {owner[mod]!r} and {component!r}; "
                        "a modality belongs to exactly one component (use one joint component instead)."
                    )
                owner.setdefault(mod, component)
        resolved: dict[str, list[str]] = {}
        for component, plist in parents.items():
            resolved[component] = []
            for parent in plist:
                target = parent if parent in modalities else owner.get(parent)
                if target is None:
                    errors.append(
                        f"component {component!r} names unknown parent {parent!r}; "
                        f"known components: {sorted(modalities)}."
                    )
                elif target == component:
                    errors.append(f"component {component!r} lists itself as a parent.")
                elif target not in resolved[component]:
                    resolved[component].append(target)
        if errors:
            raise ValueError("invalid component graph:\n  - " + "\n  - ".join(errors))
        self._parents = resolved
        self._modalities = {c: list(m) for c, m in modalities.items()}
        self._owner = owner
        sorter = graphlib.TopologicalSorter()
        for component in modalities:
            sorter.add(component, *self._parents.get(component, []))
        try:
            self.order: list[str] = list(sorter.static_order())
        except graphlib.CycleError as error:
            cycle = error.args[1]
            raise ValueError(
                "invalid component graph: the parents form a cycle "
                + " -> ".join(cycle)
                + "; CAVACHON needs a directed acyclic graph."
            ) from None

    def parents(self, component: str) -> list[str]:
        """The parent components of ``component`` (modality names resolved to their components)."""
        return list(self._parents.get(component, []))

    def modalities(self, component: str) -> list[str]:
        """The modalities ``component`` holds, in the order given."""
        return list(self._modalities[component])

    def component_of(self, modality: str) -> str:
        """The component that holds ``modality``."""
        if modality not in self._owner:
            raise KeyError(f"no component holds modality {modality!r}; modalities: {sorted(self._owner)}.")
        return self._owner[modality]

    def ancestors(self, component: str) -> list[str]:
        """All ancestors, in topological order."""
        found: set[str] = set()
        stack = self.parents(component)
        while stack:
            node = stack.pop()
            if node not in found:
                found.add(node)
                stack.extend(self.parents(node))
        return [c for c in self.order if c in found]

    def closure(self, components: Iterable[str]) -> list[str]:
        """The components plus all their ancestors, in topological order."""
        wanted = set(components)
        for component in list(wanted):
            wanted.update(self.ancestors(component))
        return [c for c in self.order if c in wanted]

