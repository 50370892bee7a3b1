"""Neural-network building blocks (Keras layers): preprocessors, encoders, products and mixtures of experts, vector quantisation, learned representations and their covariate model, decoders."""
from .conv import Conv1DDecoder, Conv1DEncoder
from .covariates import CovariateModel
from .decoder import DECODERS, Decoder
from .encoder import ENCODERS, Encoder
from .hierarchical_encoder import HIERARCHICAL_ENCODERS, HierarchicalEncoder
from .mixture_of_experts import MixtureOfExperts, log_mixture_density, mixture_moments
from .mlp import MLP
from .preprocessor import PREPROCESSORS, Preprocessor, library_size
from .product_of_experts import ProductOfExperts, product_of_gaussians
from .quantized_experts import QuantizedExperts
from .quantizer import VectorQuantizer, codebook_usage, perplexity
from .representation import LearnedRepresentation
from .sparse import as_dense

__all__ = [
    "DECODERS",
    "ENCODERS",
    "HIERARCHICAL_ENCODERS",
    "MLP",
    "PREPROCESSORS",
    "Conv1DDecoder",
    "Conv1DEncoder",
    "CovariateModel",
    "Decoder",
    "Encoder",
    "HierarchicalEncoder",
    "LearnedRepresentation",
    "MixtureOfExperts",
    "Preprocessor",
    "ProductOfExperts",
    "QuantizedExperts",
    "VectorQuantizer",
    "as_dense",
    "codebook_usage",
    "library_size",
    "log_mixture_density",
    "mixture_moments",
    "perplexity",
    "product_of_gaussians",
]
