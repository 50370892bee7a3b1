"""Base class of the data distributions ``Dist(rho_m)`` of Eq. 1."""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from .._registry import Registry, register_subclass
from ..data.support import register_support

tfd = tfp.distributions

#: Likelihoods by alias (``likelihood:`` of a modality in YAML); a subclass of
#: :class:`Likelihood` that sets ``alias`` joins it.
#:
#: :meta hide-value:
LIKELIHOODS = Registry("likelihood")

#: Smallest library size used in logs, so that a cell without counts gives finite
#: (near-zero) rates instead of ``log(0)``.
MIN_LIBRARY_SIZE = 1e-8


class Likelihood:
    """A data distribution of one modality, parameterised by the decoder.

    A likelihood is stateless: the decoder emits one unconstrained ``(B, F)`` head per
    name in :attr:`parameters`, :meth:`constrain` maps those heads to valid parameter
    values and the remaining methods evaluate the distribution they define. Keeping it
    out of the Keras layers means layers return plain tensors and distributions are
    only built in loss code.

    Subclasses set the class attributes below; a subclass that defines ``alias``
    registers itself in :data:`LIKELIHOODS`, so YAML can name it.

    Attributes
    ----------
    alias
        Registry name of the likelihood.
    parameters
        Names of the decoder heads (unconstrained inputs of :meth:`constrain`).
    input_transform
        How the preprocessor turns this modality into encoder input:
        ``"log1p_normalize"``, ``"binarize"`` or ``"identity"``.
    uses_library_size
        Whether :meth:`constrain` scales the mean by the observed library size.
    accepts_sparse
        Whether :meth:`log_prob` takes a ``tf.SparseTensor`` batch as it is (else the
        model densifies the batch first).
    samples_zeros
        Whether :meth:`sampled_log_prob` estimates :meth:`log_prob` from the decoder's
        head at a sample of the features (a component's ``sampled_zeros``).
    support
        The values it models: ``"counts"`` (non-negative integers), ``"binary"``
        (presence read from non-negative values) or ``"real"``. The data layer checks
        a modality against it before training, and analyses choose units by it.
    """

    alias: ClassVar[str]
    parameters: ClassVar[tuple[str, ...]]
    input_transform: ClassVar[str] = "identity"
    uses_library_size: ClassVar[bool] = False
    accepts_sparse: ClassVar[bool] = False
    samples_zeros: ClassVar[bool] = False
    support: ClassVar[str] = "real"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        alias = cls.__dict__.get("alias")
        if isinstance(alias, str) and alias:
            register_support(alias, cls.support)  # first: a bad support must not leave a registered class
        register_subclass(LIKELIHOODS, cls)

    def constrain(self, raw: dict[str, tf.Tensor], library_size: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """Map unconstrained decoder outputs to valid parameter values.

        Parameters
        ----------
        raw
            One ``(B, F)`` tensor per name in :attr:`parameters`.
        library_size
            Total counts per cell, ``(B,)`` or ``(B, 1)``; required when
            :attr:`uses_library_size` is true and ignored otherwise.

        Returns
        -------
        dict[str, tf.Tensor]
            The float32 parameters that :meth:`distribution`, :meth:`log_prob` and
            :meth:`mean` take.
        """
        raise NotImplementedError

    def distribution(self, params: dict[str, tf.Tensor]) -> tfd.Distribution:
        """The distribution over a cell's features.

        Returns
        -------
        tfd.Distribution
            Batch shape ``(B,)`` and event shape ``(F,)`` (features are independent).
        """
        raise NotImplementedError

    def target(self, x: tf.Tensor) -> tf.Tensor:
        """The value the distribution models, given the raw data ``x``."""
        return tf.cast(x, tf.float32)

    def log_prob(self, x: tf.Tensor, params: dict[str, tf.Tensor]) -> tf.Tensor:
        """Log-likelihood of the raw data ``x`` ``(B, F)``, summed over features, ``(B,)``."""
        return self.distribution(params).log_prob(self.target(x))

    def sampled_log_prob(self, pieces: dict[str, tf.Tensor]) -> tf.Tensor:
        """An unbiased estimate of :meth:`log_prob` (B,) from
        :func:`~cavachon_like.module.terms.sampled_reconstruction`'s pieces; only for
        likelihoods with :attr:`samples_zeros`."""
        raise NotImplementedError(f"likelihood {self.alias!r} cannot estimate its log-probability from sampled "
                                  "features.")

    def mean(self, params: dict[str, tf.Tensor]) -> tf.Tensor:
        """Expected value of :meth:`target` under the distribution, ``(B, F)``."""
        return self.distribution(params).mean()

    def normalized_mean(self, raw: dict[str, tf.Tensor], scale: float = 1e4) -> tf.Tensor:
        """Expected value at a common library size ``scale``, comparable across cells, ``(B, F)``.

        Analyses (attribution, differential analysis) compare cells through this
        value: for count likelihoods it is the expected count per ``scale`` total
        counts; likelihoods without library size ignore ``scale``.
        """
        library = tf.fill(tf.stack([tf.shape(next(iter(raw.values())))[0], 1]), float(scale))
        return self.mean(self.constrain(raw, library))

    def expected_log1p(self, raw: dict[str, tf.Tensor], depth: Any, scale: float = 1e4,
                       tolerance: float = 1e-4, max_count: int = 100_000) -> np.ndarray:
        """``E[log1p(scale * x / depth)]`` for ``x`` drawn from the distribution at library size
        ``depth``, ``(B, F)`` float64: the expected value of scanpy's ``normalize_total(target_sum=
        scale)`` + ``log1p`` for a cell of that depth.

        Log-normalised data are compared in this space, and there ``log1p`` of the
        :meth:`normalized_mean` is not their expectation: at a few hundred counts per cell most
        of a gene's values are 0, which the mean's log places far too high for rare genes.
        The sum ``sum_k P(x = k) log1p(scale * k / depth)`` runs over counts ``k``
        until what the tail ``x > k`` can still add is known to within ``tolerance``: it lies
        between its mass times ``log1p(scale * (k + 1) / depth)`` and its mass times the log1p
        of its mean (Jensen), and their midpoint is added. No Monte Carlo noise; an entry
        leaves the sum when its tail is settled, so the cost grows with the counts each
        distribution reaches (blocks of counts widen as entries leave), not with ``max_count``.

        Parameters
        ----------
        raw
            Decoder heads, ``(B, F)`` each.
        depth
            Library size at which the counts are drawn: a number or one per cell ``(B,)``.
        scale
            The total each cell is normalised to (``target_sum``).
        tolerance
            Largest error of an entry from truncating the sum.
        max_count
            Counts beyond this are only bounded (the midpoint is added whatever the bounds' gap).
        """
        if self.support not in ("counts", "binary"):
            raise ValueError(f"likelihood {self.alias!r} models real values: the expected log1p of normalised counts "
                             "is defined for count and binary likelihoods only.")
        n = int(tf.shape(next(iter(raw.values())))[0])
        depth = np.broadcast_to(np.asarray(depth, np.float64).reshape(-1, 1), (n, 1))
        if not np.all(depth > 0):
            raise ValueError(f"depth must be positive, got {depth.min()}.")
        params = self.constrain(raw, tf.constant(depth, tf.float32))
        mean = tf.cast(self.mean(params), tf.float64)
        shape = tuple(mean.shape)
        flat = {k: tf.reshape(tf.broadcast_to(v, shape), [-1]) for k, v in params.items()}
        mean = tf.reshape(mean, [-1]).numpy()
        per_count = np.broadcast_to(float(scale) / depth, shape).ravel()
        total, mass, first_moment = np.zeros(mean.size), np.zeros(mean.size), np.zeros(mean.size)
        active = np.arange(mean.size)
        last = 1 if self.support == "binary" else int(max_count)  # binary: log_prob means nothing past 1
        start, size = 0, 2
        while active.size:
            # most entries end within a few counts: blocks double, within the bound
            size = int(np.clip(min(2 * size, BLOCK_ELEMENTS // active.size), 1, 4096))
            counts = np.arange(start, min(start + size, last + 1), dtype=np.float64)
            start = int(counts[-1]) + 1
            # float32 holds lgamma of small counts to ~1e-7, of counts in the thousands only to ~1e-3
            dtype = tf.float32 if start <= 64 else tf.float64
            values = {key: tf.cast(tf.gather(v, active), dtype) for key, v in flat.items()}
            p = np.exp(self._count_log_prob(values, tf.constant(counts[:, None], dtype)).numpy().astype(np.float64))
            c = per_count[active]
            total[active] += (p * np.log1p(c * counts[:, None])).sum(0)
            mass[active] += p.sum(0)
            first_moment[active] += (p * counts[:, None]).sum(0)
            tail = np.maximum(1.0 - mass[active], 0.0)
            low = tail * np.log1p(c * start)
            high = tail * np.log1p(c * np.maximum(mean[active] - first_moment[active], 0.0) / np.maximum(tail, 1e-300))
            high = np.maximum(high, low)
            done = (high - low < 2 * tolerance) | (start > last)
            total[active[done]] += 0.5 * (low[done] + high[done])
            active = active[~done]
        return total.reshape(shape)

    @property
    def _count_log_prob(self) -> Any:
        """``log P(x = counts)`` of flattened parameters, one graph for every number of entries
        (:meth:`expected_log1p` calls it with fewer entries each time; eager TFP would retrace)."""
        if "_count_log_prob_function" not in self.__dict__:
            self.__dict__["_count_log_prob_function"] = tf.function(
                lambda values, counts: self.distribution(values).distribution.log_prob(counts), reduce_retracing=True)
        return self.__dict__["_count_log_prob_function"]

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments, for :meth:`from_config`."""
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Likelihood:
        """The likelihood that :meth:`get_config` describes.

        Parameters
        ----------
        config
            Constructor arguments, as :meth:`get_config` returns them.

        Returns
        -------
        Likelihood
        """
        return cls(**config)

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


#: Most probabilities evaluated in one step of :meth:`Likelihood.expected_log1p`'s sum: few
#: entries reach large counts, so blocks of counts double as entries drop out, within this bound.
BLOCK_ELEMENTS = 1 << 24


def float32_heads(raw: dict[str, tf.Tensor], names: tuple[str, ...]) -> list[tf.Tensor]:
    """The named heads as float32, since decoders may compute in float16 under mixed precision."""
    missing = [name for name in names if name not in raw]
    if missing:
        raise KeyError(f"missing decoder outputs {missing}; got {sorted(raw)}.")
    return [tf.cast(raw[name], tf.float32) for name in names]


def log_library_size(library_size: tf.Tensor | None) -> tf.Tensor:
    """``log(library_size)`` as a ``(B, 1)`` float32 column that broadcasts over features."""
    if library_size is None:
        raise ValueError("this likelihood scales its mean by the library size; pass `library_size`.")
    library_size = tf.reshape(tf.cast(library_size, tf.float32), (-1, 1))
    return tf.math.log(tf.maximum(library_size, MIN_LIBRARY_SIZE))


def serialize_likelihood(likelihood: Likelihood) -> dict[str, Any]:
    """``{"class_name": alias, "config": ...}``, the inverse of :func:`get_likelihood`."""
    alias = type(likelihood).__dict__.get("alias")
    if not alias:
        raise ValueError(f"{type(likelihood).__qualname__} defines no `alias` of its own, so it cannot be named.")
    return {"class_name": alias, "config": likelihood.get_config()}


def get_likelihood(identifier: str | dict[str, Any] | type[Likelihood] | Likelihood) -> Likelihood:
    """Resolve a likelihood from an instance, a class, a registered name or a serialized dict.

    Parameters
    ----------
    identifier
        A :class:`Likelihood`, a subclass of it, a name in :data:`LIKELIHOODS` (e.g.
        ``"zinb"``) or ``{"class_name": name, "config": {...}}`` as written by
        :func:`serialize_likelihood`.
    """
    if isinstance(identifier, Likelihood):
        return identifier
    if isinstance(identifier, dict):
        return LIKELIHOODS.get(identifier["class_name"]).from_config(identifier.get("config", {}))
    if isinstance(identifier, type) and not issubclass(identifier, Likelihood):
        raise TypeError(f"{identifier.__qualname__} is not a Likelihood.")
    return LIKELIHOODS.create(identifier)
