"""User-facing models."""
from .cavachon import CAVACHON
from .graph import ComponentGraph

__all__ = ["CAVACHON", "ComponentGraph"]
