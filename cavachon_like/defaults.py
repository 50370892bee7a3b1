"""Defaults shared by the library and the command line, in a module that imports nothing.

They live here, not next to the code that uses them, so that ``cavachon_like.cli`` can
show them in ``--help`` without importing TensorFlow (importing
:mod:`cavachon_like.model.differential` runs the TensorFlow-heavy ``model`` package).
"""
from __future__ import annotations

#: Log2 fold-change margin: changes smaller than ~19% are not differential. It keeps
#: the small compositional shifts of a softmax decoder (every gene moves a little
#: when a few move a lot) from being called, and is scvi-tools' default.
DEFAULT_DELTA = 0.25
#: Posterior expected false discovery rate of the list of calls.
DEFAULT_FDR = 0.05
