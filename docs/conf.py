"""Sphinx configuration of the cavachon_like API reference.

Build with ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` from the
repository root; ``tests/test_docs.py`` runs the same build, so a warning fails the tests.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from sphinx.ext import napoleon

HERE = Path(__file__).resolve().parent
# The package from this checkout (not an installed copy) and the local extensions.
sys.path[:0] = [str(HERE.parent), str(HERE / "_ext")]
# TensorFlow loads with the package; its C++ start-up lines are noise in a docs build.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

project = "cavachon_like"
author = "cavachon_like authors"
copyright = "cavachon_like authors"
release = version = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "package_pages",
    "yaml_reference",
]
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_theme_options = {"description": "Hierarchical VAEs over a DAG of single-cell modalities", "fixed_sidebar": True}

# numpy-style docstrings only: the package uses no Google-style sections.
napoleon_google_docstring = False
napoleon_numpy_docstring = True

autodoc_default_options = {"members": True, "member-order": "bysource", "show-inheritance": True}
autodoc_typehints = "signature"
# A method without a docstring of its own implements a documented base-class method and shows
# that text, unless the base is outside the package (see _skip_foreign_docstrings).
autodoc_inherit_docstrings = True

# Every cross-reference must resolve (a typo in :func:`...` fails the build), except to the
# libraries the package builds on: without network access there is no intersphinx inventory.
nitpicky = True
EXTERNAL = ("builtins", "collections", "logging", "os", "pathlib", "typing", "types", "numpy", "np", "scipy", "sp",
            "pandas", "pd", "anndata", "ad", "mudata", "md", "tensorflow", "tf", "tensorflow_probability",
            "tfp", "tfd", "keras", "matplotlib", "gseapy", "sklearn", "h5py")
nitpick_ignore_regex = [
    (r"py:.*", rf"~?({'|'.join(EXTERNAL)})\..*"),
    # Sphinx splits generic aliases' annotations (list[tuple[str | Path, str]]) into such targets.
    (r"py:class", r".*\[.*"),
]


def _napoleon_except_attributes(app, what, name, obj, options, lines):
    """Napoleon for everything but data, attribute and property docstrings.

    Napoleon reads the first line of those as ``type: description``; this package writes
    prose there (``#: Bins per chromosome (chr1..chr10) of the default genome: 2,000 bins``),
    which it would turn into a type named "Bins per chromosome ... genome".
    """
    if what not in ("data", "attribute", "property"):
        napoleon._process_docstring(app, what, name, obj, options, lines)


def _skip_foreign_docstrings(app, what, name, obj, skip, options):
    """Leave out methods whose only docstring would be inherited from another library.

    They override Keras protocol (``get_config``, ``build``, ``train_step``, callbacks'
    ``on_epoch_begin``): the text would describe Keras, not the override, and Keras writes
    its docstrings in Markdown, which rst renders with errors.
    """
    if skip or what != "class":
        return None
    function = obj.fget if isinstance(obj, property) else getattr(obj, "__func__", obj)
    if getattr(function, "__doc__", None) or not hasattr(function, "__qualname__"):
        return None
    module = sys.modules.get(getattr(function, "__module__", ""))
    owner = module
    for part in function.__qualname__.split(".")[:-1]:
        owner = getattr(owner, part, None)
    if not isinstance(owner, type):
        return None
    for base in owner.__mro__[1:]:
        inherited = base.__dict__.get(name)
        if inherited is not None and getattr(inherited, "__doc__", None):
            return True if not base.__module__.startswith("cavachon_like") else None
    return None


def setup(app):
    """Put :func:`_napoleon_except_attributes` in place of napoleon's docstring handler and
    connect :func:`_skip_foreign_docstrings`."""
    app.connect("autodoc-skip-member", _skip_foreign_docstrings)
    for listener in list(app.events.listeners["autodoc-process-docstring"]):
        if listener.handler is napoleon._process_docstring:
            app.disconnect(listener.id)
            app.connect("autodoc-process-docstring", _napoleon_except_attributes, priority=listener.priority)
