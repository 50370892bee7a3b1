"""User-facing models: the public interface every family implements, and CAVACHON."""
from .base import MultimodalModel
from .cavachon import CAVACHON
from .graph import ComponentGraph
from .mapping import QueryMapping

__all__ = ["CAVACHON", "ComponentGraph", "MultimodalModel", "QueryMapping"]
