"""Neural-network building blocks (Keras layers): preprocessors, encoders, product of experts, decoders."""
from .decoder import DECODERS, Decoder
from .encoder import ENCODERS, Encoder
from .hierarchical_encoder import HIERARCHICAL_ENCODERS, HierarchicalEncoder
from .mlp import MLP
from .preprocessor import PREPROCESSORS, Preprocessor, library_size
from .product_of_experts import ProductOfExperts, product_of_gaussians

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
    "ProductOfExperts",
    "library_size",
    "product_of_gaussians",
]
