"""cavachon_like: hierarchical VAEs over a DAG of single-cell modalities (CAVACHON), on Keras 3.

The package is layered like the data flow:

- :mod:`cavachon_like.data`: ``Modality``/``MultiModality``, readers, QC, ``tf.data``, simulators;
- :mod:`cavachon_like.distributions`: likelihoods and priors (TensorFlow Probability);
- :mod:`cavachon_like.nn`: Keras layers (preprocessor, encoders, decoder);
- :mod:`cavachon_like.module`: ``Component``, one latent variable with its modules;
- :mod:`cavachon_like.model`: ``CAVACHON``, components wired by a DAG;
- :mod:`cavachon_like.train`: stage plans, progressive blending, distributed scaling;
- :mod:`cavachon_like.config` and :mod:`cavachon_like.cli`: YAML runs and the command line.
"""
# Private aliases keep the helpers out of dir(cavachon_like) and tab completion.
import importlib as _importlib
import os as _os
import sys as _sys
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

if _TYPE_CHECKING:  # what the names are, for type checkers and editors; at run time they load on first use
    from .data import (
        Modality,
        MultiModality,
        read_10x,
        read_h5ad,
        read_h5mu,
        simulate,
        simulate_binned,
    )
    from .model import CAVACHON
    from .seed import set_seed

__all__ = ["CAVACHON", "Modality", "MultiModality", "read_10x", "read_h5ad", "read_h5mu", "set_seed", "simulate",
           "simulate_binned"]
__version__ = "0.1.0"

#: Public name -> the submodule defining it.
_LAZY = {
    "CAVACHON": ".model",
    "Modality": ".data",
    "MultiModality": ".data",
    "read_10x": ".data",
    "read_h5ad": ".data",
    "read_h5mu": ".data",
    "set_seed": ".seed",
    "simulate": ".data",
    "simulate_binned": ".data",
}


def __getattr__(name: str) -> _Any:
    """Import a public name from its submodule on first access and cache it on the package."""
    if name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names (loaded or not), dunders and submodules imported so far."""
    loaded = {name for name in globals() if name.startswith("__") or not name.startswith("_")}
    return sorted(loaded | set(__all__))


def _command_line() -> bool:
    """Whether this process is the command line (``cavachon-like ...`` or ``python -m cavachon_like.cli``)."""
    return _os.path.basename(_sys.argv[0]).startswith("cavachon-like") or _sys.argv[:1] == ["-m"]


# A library user gets everything imported now: Keras finds the package's layers and models
# by their registration, which importing their modules does, so `import cavachon_like` must
# be enough before `keras.saving.load_model`. The command line instead imports the public
# names on first access (PEP 562 __getattr__ above): they pull in TensorFlow (seconds of
# start-up and C++ log lines), which `--help` and argument errors must not pay for, and
# its commands import what they use.
if not _command_line():
    for _name in __all__:
        __getattr__(_name)
