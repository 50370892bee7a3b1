"""cavachon_like: hierarchical VAEs over a DAG of single-cell modalities (CAVACHON), on Keras 3.

The package is layered like the data flow:

- :mod:`cavachon_like.data`: ``Modality``/``MultiModality``, readers, QC, ``tf.data``, simulator;
- :mod:`cavachon_like.distributions`: likelihoods and priors (TensorFlow Probability);
- :mod:`cavachon_like.nn`: Keras layers (preprocessor, encoders, decoder);
- :mod:`cavachon_like.module`: ``Component``, one latent variable with its modules;
- :mod:`cavachon_like.model`: ``CAVACHON``, components wired by a DAG;
- :mod:`cavachon_like.train`: stage plans, progressive blending, distributed scaling;
- :mod:`cavachon_like.config` and :mod:`cavachon_like.cli`: YAML runs and the command line.
"""
from .data import Modality, MultiModality, read_10x, read_h5ad, read_h5mu, simulate
from .model import CAVACHON
from .seed import set_seed

__all__ = ["CAVACHON", "Modality", "MultiModality", "read_10x", "read_h5ad", "read_h5mu", "set_seed", "simulate"]
__version__ = "0.1.0"
