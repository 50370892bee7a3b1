"""Sphinx directives that lay out API pages from the package itself, so pages cannot drift.

``.. package-api:: cavachon_like.data`` documents a subpackage's public names (its
``__all__``) under "Public API", then every submodule under "Modules" with only what the
package does not already export: each object is described once, under the name users
import it by. A new submodule appears without editing the page.

A cross-reference may name an object by any path it can be imported from
(``cavachon_like.MultiModality``, ``cavachon_like.model.base.MultimodalModel.fit``, or a
bare name in its module's docstrings): one that Sphinx does not find under that name is
resolved to where the same Python object is documented. A reference to an object that is
documented nowhere still fails the build.

``.. cli-help::`` shows ``cavachon-like --help`` and each command's ``--help``, as argparse
prints them.
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import os
import pkgutil
import re
from types import ModuleType
from typing import Any, ClassVar

from docutils.parsers.rst import directives
from docutils.utils import get_source_line
from sphinx.errors import PycodeError
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docutils import SphinxDirective


def parse_rst(state, text: str, source: str) -> list:
    """The nodes of rst ``text`` (section titles allowed), parsed in the directive's ``state``.

    Parameters
    ----------
    state
        The calling directive's ``self.state``.
    text
        Generated rst.
    source
        Name of the text in messages.

    Returns
    -------
    list of docutils.nodes.Node
    """
    try:
        from sphinx.util.parsing import nested_parse_to_nodes
    except ImportError:  # Sphinx < 7.4 (setup.cfg allows 7.2)
        from docutils import nodes
        from docutils.statemachine import StringList
        from sphinx.util.nodes import nested_parse_with_titles

        container = nodes.Element()
        nested_parse_with_titles(state, StringList(text.splitlines(), source=source), container)
        return container.children
    return nested_parse_to_nodes(state, text, source=source)


#: Section underline characters below the page title's ``=``: sections, then submodules.
SECTION, SUBSECTION = "-", "~"


def _heading(text: str, underline: str) -> list[str]:
    return [text, underline * len(text), ""]


def defined_exports(package: ModuleType, module: ModuleType) -> list[str]:
    """Names of ``package.__all__`` that ``module`` defines, i.e. that the package page already documents.

    Parameters
    ----------
    package
        The subpackage, e.g. ``cavachon_like.data``.
    module
        One of its submodules.

    Returns
    -------
    list of str
        The names to exclude from the submodule's section.
    """
    names = getattr(package, "__all__", [])
    return sorted(n for n in names if n in vars(module) and vars(module)[n] is getattr(package, n, None)
                  and not _is_data(getattr(package, n)))


def _is_data(obj: Any) -> bool:
    # A constant's text is a ``#:`` comment beside its definition, which autodoc finds only in
    # the defining module: constants are documented there, not under the package.
    return not (inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj))


def submodules(package: ModuleType) -> list[ModuleType]:
    """The imported submodules of ``package`` in name order; a plain module has none.

    Parameters
    ----------
    package
        A package or a module.

    Returns
    -------
    list of module
    """
    if not hasattr(package, "__path__"):
        return []
    names = [info.name for info in pkgutil.iter_modules(package.__path__, package.__name__ + ".")
             if not info.name.rpartition(".")[2].startswith("_")]
    return [importlib.import_module(name) for name in sorted(names)]


def _defining_module(package: ModuleType, name: str) -> str:
    """The submodule whose ``#:`` comment documents the constant ``package.name`` (the package
    itself when none does; the reference then fails the build, as an undocumented constant should)."""
    value = getattr(package, name)
    for module in submodules(package):
        if vars(module).get(name) is value:
            try:
                if ("", name) in ModuleAnalyzer.for_module(module.__name__).find_attr_docs():
                    return module.__name__
            except PycodeError:
                continue
    return package.__name__


class PackageAPI(SphinxDirective):
    """``.. package-api:: dotted.name``, documenting a package and its submodules.

    Options: ``:exclude:`` public names the page documents itself; ``:exclude-modules:``
    submodules (short names) documented elsewhere; ``:hide-values:`` constants whose value
    is too long to show (their text stays); ``:names-only:`` lists the public names
    as links instead of documenting them (the top-level package re-exports names that the
    subpackages' pages document).
    """

    required_arguments = 1
    option_spec: ClassVar[dict[str, Any]] = {"exclude": directives.unchanged,
                                             "exclude-modules": directives.unchanged,
                                             "hide-values": directives.unchanged,
                                             "names-only": directives.flag}

    def run(self):
        name = self.arguments[0]
        package = importlib.import_module(name)
        exclude = [n.strip() for n in self.options.get("exclude", "").split(",") if n.strip()]
        public = getattr(package, "__all__", [])
        constants = [n for n in public if _is_data(getattr(package, n))]
        lines = _heading("Public API", SECTION) + [f".. automodule:: {name}"]
        if "names-only" in self.options:
            # The names are documented on their subpackages' pages; list them with links there.
            lines += ["   :no-members:", ""]
            lines += [f"* :obj:`{name}.{n}`" for n in public]
        elif exclude or constants:
            lines.append(f"   :exclude-members: {', '.join(exclude + constants)}")
        lines.append("")
        if constants and "names-only" not in self.options:
            links = ", ".join(f":data:`{n} <{_defining_module(package, n)}.{n}>`" for n in constants)
            lines += [f"Constants (documented with their module below): {links}.", ""]
        skip_modules = {n.strip() for n in self.options.get("exclude-modules", "").split(",")}
        hidden = [n.strip() for n in self.options.get("hide-values", "").split(",") if n.strip()]
        modules = [m for m in submodules(package) if m.__name__.rpartition(".")[2] not in skip_modules]
        if modules:
            lines += _heading("Modules", SECTION)
        for module in modules:
            lines += _heading(module.__name__, SUBSECTION) + [f".. automodule:: {module.__name__}"]
            skip = [] if "names-only" in self.options else defined_exports(package, module)
            own_hidden = [n for n in hidden if _defining_module(package, n) == module.__name__]
            if skip or own_hidden:
                lines.append(f"   :exclude-members: {', '.join(skip + own_hidden)}")
            if module.__name__.rpartition(".")[2] in public:
                # The package exports a function of the module's name (cavachon_like.data.simulate):
                # the function owns the dotted name, the module section only its text.
                lines.append("   :no-index:")
            lines.append("")
            for constant in own_hidden:
                lines += [f".. autodata:: {module.__name__}.{constant}", "   :no-value:", ""]
        return parse_rst(self.state, "\n".join(lines), f"<package-api {name}>")


class CLIHelp(SphinxDirective):
    """``.. cli-help::``: the command line's ``--help`` texts, one literal block per command."""

    def run(self):
        from cavachon_like import cli

        lines = []
        for command in ([], ["train"], ["predict"], ["analyze"]):
            title = " ".join(["cavachon-like", *command, "--help"])
            lines += [f"``{title}``::", ""]
            lines += ["   " + line for line in _help_text(cli.main, [*command, "--help"]).splitlines()]
            lines.append("")
        return parse_rst(self.state, "\n".join(lines), "<cli-help>")


def _help_text(main, argv: list[str]) -> str:
    """What ``main(argv)`` prints before argparse exits, at a fixed width (argparse reads ``COLUMNS``)."""
    out = io.StringIO()
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            main(argv)
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    return out.getvalue()


_MISSING = object()
#: Values too common to identify an object by (small ints and strings are shared).
_UNTRACKABLE = (bool, int, float, complex, str, bytes, type(None))


def lookup(dotted: str) -> Any:
    """The object a dotted path of this package names, or a sentinel when it names none.

    The longest importable prefix is the module; the rest are attributes, read statically
    from classes so that a method is its function (classmethods and properties unwrapped).

    Parameters
    ----------
    dotted
        E.g. ``"cavachon_like.model.base.MultimodalModel.fit"``.

    Returns
    -------
    object
    """
    parts = dotted.split(".")
    if parts[0] != "cavachon_like":
        return _MISSING
    obj: Any = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=1):
        # As Python's own attribute access: a package's attribute wins over a submodule of the
        # same name (cavachon_like.data.simulate is the function, not the module).
        if inspect.ismodule(obj) and not hasattr(obj, part):
            try:
                obj = importlib.import_module(".".join(parts[: i + 1]))
                continue
            except ImportError:
                return _MISSING
        try:
            obj = inspect.getattr_static(obj, part) if inspect.isclass(obj) else getattr(obj, part)
        except AttributeError:
            return _MISSING
        if isinstance(obj, (classmethod, staticmethod)):
            obj = obj.__func__
        elif isinstance(obj, property):
            obj = obj.fget
    return obj


def _documented(env) -> dict[int, str]:
    """``id(object) -> name`` of every Python object documented in this build (once per build)."""
    objects = env.get_domain("py").objects
    cache = getattr(env, "_cavachon_documented", None)
    if cache is None or cache[0] != len(objects):
        by_id: dict[int, str] = {}
        for name, entry in objects.items():
            obj = lookup(name)
            if obj is not _MISSING and not isinstance(obj, _UNTRACKABLE) and not entry.aliased:
                by_id.setdefault(id(obj), name)
        cache = (len(objects), by_id)
        env._cavachon_documented = cache
    return cache[1]


def _candidates(node) -> list[str]:
    """Dotted names a Python reference may mean, most specific first.

    Besides Sphinx's context (current module and class), the module the docstring was written
    in: autodoc names its source ``docstring of <defining module>.<name>``, so a bare name
    means what it means in that module even when the object is documented under its package.
    """
    target = node["reftarget"].lstrip(".~")
    module, cls = node.get("py:module"), node.get("py:class")
    names = [target]
    if module and cls:
        names.append(f"{module}.{cls}.{target}")
    if module:
        names.append(f"{module}.{target}")
    source = get_source_line(node)[0] or ""
    match = re.search(r"docstring of ([\w.]+)", source)
    if match:
        parts = match.group(1).split(".")
        names += [".".join([*parts[:cut], target]) for cut in range(len(parts), 0, -1)]
    return list(dict.fromkeys(names))


def _documented_name(env, candidate: str) -> str | None:
    """The documented name of what ``candidate`` names: itself, the same object documented
    elsewhere or, for an attribute of a class, the attribute of a documented base class (a
    docstring inherited from the base refers to the base's attributes)."""
    objects = env.get_domain("py").objects
    if candidate in objects:
        return candidate
    obj = lookup(candidate)
    if obj is not _MISSING and not isinstance(obj, _UNTRACKABLE):
        name = _documented(env).get(id(obj))
        if name is not None:
            return name
    parent, _, attribute = candidate.rpartition(".")
    owner = lookup(parent) if parent else _MISSING
    if isinstance(owner, type):
        for base in owner.__mro__:
            base_name = _documented(env).get(id(base))
            if base_name is not None and f"{base_name}.{attribute}" in objects:
                return f"{base_name}.{attribute}"
    return None


def resolve_alias(app, env, node, contnode):
    """``missing-reference`` handler: resolve a Python reference by the object it names."""
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    for candidate in _candidates(node):
        name = _documented_name(env, candidate)
        if name is not None:
            for role in (node["reftype"], "obj"):
                resolved = domain.resolve_xref(env, node["refdoc"], app.builder, role, name, node, contnode)
                if resolved is not None:
                    return resolved
    return None


def setup(app):
    """Register the directives and the reference resolver with Sphinx."""
    app.add_directive("package-api", PackageAPI)
    app.add_directive("cli-help", CLIHelp)
    app.connect("missing-reference", resolve_alias)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
