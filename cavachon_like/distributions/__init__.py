"""Data likelihoods ``Dist(rho_m)`` and latent priors ``p(z_m)`` of Eq. 1.

Likelihoods are plain, stateless objects used in loss code; priors are Keras layers
because mixture priors hold learnable weights. Both are looked up by name in
:data:`LIKELIHOODS` and :data:`PRIORS`, which user subclasses join by setting ``alias``.
"""
from .bernoulli import Bernoulli
from .bernoulli_depth import BernoulliDepth
from .laplace import Laplace
from .laplace_prior import LaplacePrior
from .likelihood import LIKELIHOODS, Likelihood, get_likelihood, serialize_likelihood
from .mixture_gaussian_prior import MixtureGaussianPrior
from .negative_binomial import NegativeBinomial
from .normal import Normal
from .poisson import Poisson
from .prior import PRIORS, Prior
from .standard_normal_prior import StandardNormalPrior
from .zero_inflated_negative_binomial import ZeroInflatedNegativeBinomial

__all__ = [
    "LIKELIHOODS",
    "PRIORS",
    "Bernoulli",
    "BernoulliDepth",
    "Laplace",
    "LaplacePrior",
    "Likelihood",
    "MixtureGaussianPrior",
    "NegativeBinomial",
    "Normal",
    "Poisson",
    "Prior",
    "StandardNormalPrior",
    "ZeroInflatedNegativeBinomial",
    "get_likelihood",
    "serialize_likelihood",
]
