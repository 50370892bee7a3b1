"""The Sphinx documentation builds without a warning and documents the whole public API.

``-W`` makes every warning an error: a docstring rst cannot parse, a cross-reference to
nothing (the build is nitpicky), an object described twice, or a YAML key of the schema
without a description in ``docs/_ext/yaml_reference.py``. The build runs in a subprocess,
as a user would run it, so its output is the assertion message.
"""
from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("data", "nn", "distributions", "module", "model", "train", "analysis", "plotting", "config")


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> Path:
    """The HTML of one build, shared by the tests below."""
    out = tmp_path_factory.mktemp("docs") / "html"
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(ROOT / "docs"), str(out)]
    result = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stderr}\n{result.stdout}"
    return out


def test_docs_build_without_warnings(html):
    assert (html / "index.html").is_file()


def test_every_public_name_is_documented(html):
    # autodoc leaves out an object without a docstring: a public class or function without one
    # would silently be missing from its page.
    import importlib

    pages = "".join((html / f"{name}.html").read_text() for name in SUBPACKAGES)
    missing = []
    for name in SUBPACKAGES:
        package = importlib.import_module(f"cavachon_like.{name}")
        for public in package.__all__:
            obj = getattr(package, public)
            if inspect.isclass(obj) or inspect.isroutine(obj):
                anchor = re.escape(f'id="cavachon_like.{name}.{public}"')
            else:  # constants are documented in their defining module, with their comment
                anchor = rf'id="cavachon_like\.{name}\.\w+\.{public}"'
            if not re.search(anchor, pages):
                missing.append(f"cavachon_like.{name}.{public}")
    assert not missing, f"not in the API reference: {missing}"


def test_yaml_reference_lists_every_key_and_registered_name(html):
    from cavachon_like.config.schema import SCHEMA
    from cavachon_like.distributions import LIKELIHOODS, PRIORS
    from cavachon_like.model.specs import COMPONENT_KEYS

    page = (html / "yaml.html").read_text()
    keys = [key for key, rule in SCHEMA.items() if not isinstance(rule, dict)]
    keys += [key for rules in SCHEMA.values() if isinstance(rules, dict) for key in rules]
    # The package's own names: other tests in this process may have registered classes of theirs,
    # which the build (a fresh interpreter) rightly does not list.
    names = [*COMPONENT_KEYS] + [name for registry in (LIKELIHOODS, PRIORS) for name in registry.names()
                                 if registry.get(name).__module__.startswith("cavachon_like.")]
    missing = [name for name in keys + names if f'<span class="pre">{name}</span>' not in page]
    assert not missing, f"missing from the YAML reference: {missing}"
