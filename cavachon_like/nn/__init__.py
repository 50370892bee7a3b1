"""Neural-network building blocks (Keras layers): preprocessors, encoders, decoders."""
from .decoder import DECODERS, Decoder
from .encoder import ENCODERS, Encoder
from .hierarchical_encoder import HIERARCHICAL_ENCODERS, HierarchicalEncoder
from .mlp import MLP
from .preprocessor import PREPROCESSORS, Preprocessor, library_size

__all__ = [
    "DECODERS",
    "ENCODERS",
    "HIERARCHICAL_ENCODERS",
    "MLP",
    "PREPROCESSORS",
    "Decoder",
    "Encoder",
    "HierarchicalEncoder",
    "Preprocessor",
    "library_size",
]
