"""The training, validation and prediction steps of :class:`~cavachon_like.CAVACHON` (what Keras'
``fit``, ``evaluate`` and ``predict`` run on each batch), and the loss they share."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from ..nn import codebook_usage
from ..train import global_mean, multi_worker


class TrainingSteps:
    """Keras' per-batch steps for a model of components (mixed into ``CAVACHON``).

    The host provides ``components``, ``graph``, ``_active`` (the components being trained),
    ``kl_weight``, ``_pretraining`` and the metric trackers.
    """

    def _maybe_symbolic_build(self, iterator: Any = None, data_batch: Any = None) -> None:
        """Keras' symbolic build before ``fit``/``evaluate``, skipped when every layer is built.

        Under a ``tf.distribute`` strategy Keras first reduces one batch across replicas to build
        the model symbolically; with ``MultiWorkerMirroredStrategy`` that reduce fails on a nested
        (dict) batch such as this model's (keras-team/keras#20329). Every weight is made when
        the model is constructed and each phase's optimizer before it trains, so there is
        nothing to build.
        """
        if all(layer.built for layer in self._flatten_layers()):
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def loss_terms(
        self, x: Mapping[str, tf.Tensor], outputs: Mapping[str, Any], components: Sequence[str]
    ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """Per-cell loss of ``components`` and its named terms (``<c>_kl``, ``<m>_nll``).

        The loss is the negative ELBO with its KL terms weighted by the variable ``kl_weight``
        (1 except during a KL warm-up); during pre-training the KL is to a standard
        normal. The terms are unweighted, and the logged ``loss`` is their sum, so the
        monitored loss is the negative ELBO whatever the warm-up.
        """
        terms: dict[str, tf.Tensor] = {}
        kls, nlls = [], []
        for name in components:
            parts = self.components[name].loss_terms(x, outputs[name], pretrain=self._pretraining)
            terms[f"{name}_kl"] = parts["kl"]
            terms.update({f"{m}_nll": v for m, v in parts["nll"].items()})
            kls.append(parts["kl"])
            nlls.extend(parts["nll"].values())
        kl, nll = tf.add_n(kls), tf.add_n(nlls)
        return nll + kl * tf.cast(self.kl_weight, kl.dtype), terms

    def _update_trackers(self, terms: Mapping[str, tf.Tensor], outputs: Mapping[str, Any]) -> dict[str, tf.Tensor]:
        self.loss_tracker.update_state(tf.add_n(list(terms.values())))
        logs = {"loss": self.loss_tracker.result()}
        for name in self._active:
            if name in self.usage_trackers and "codes" in outputs[name]:
                usage = codebook_usage(outputs[name]["codes"], self.components[name].n_codes)
                for tracker, value in zip(self.usage_trackers[name].values(), usage):
                    tracker.update_state(value)
                    logs[tracker.name] = tracker.result()
            self.kl_trackers[name].update_state(terms[f"{name}_kl"])
            logs[f"{name}_kl"] = self.kl_trackers[name].result()
            for m in self.graph.modalities(name):
                self.nll_trackers[m].update_state(terms[f"{m}_nll"])
                logs[f"{m}_nll"] = self.nll_trackers[m].result()
        return logs

    def train_step(self, data: Mapping[str, Any]) -> dict[str, tf.Tensor]:
        """One gradient step of the current stage's components on a batch of :meth:`~cavachon_like.CAVACHON.make_dataset`,
        the loss averaged over the global batch (replicas of a ``tf.distribute`` strategy together
        take the single-device step); returns the running ``loss``, ``<c>_kl`` and ``<m>_nll``."""
        tables = self._tables()
        with tf.GradientTape() as tape:
            for table in tables:  # not trainable weights (see LearnedRepresentation), so watched by hand
                tape.watch(table.embeddings.value)
            outputs = self(data, training=True, sample=self.sample_latent, components=self._active)
            per_cell, terms = self.loss_terms(data["x"], outputs, self._active)
            loss = self.optimizer.scale_loss(global_mean(per_cell))
        weights = self.trainable_weights
        gradients = tape.gradient(loss, weights + [table.embeddings.value for table in tables])
        self.optimizer.apply_gradients(zip(gradients[:len(weights)], weights))
        self._step_tables(tables, gradients[len(weights):])
        return self._per_replica_logs(self._update_trackers(terms, outputs))

    def test_step(self, data: Mapping[str, Any]) -> dict[str, tf.Tensor]:
        """The running metrics of :meth:`train_step` on a batch, without a gradient step of the model.

        Cells with learned representations (``posterior: representation``) do take a step
        of their own rows against the frozen model, as multiDGD's validation cells do: the
        validation loss then measures how well the decoders explain cells they never trained on.
        """
        tables = self._tables()
        with tf.GradientTape() as tape:
            for table in tables:
                tape.watch(table.embeddings.value)
            outputs = self(data, training=False, sample=self.sample_latent, components=self._active)
            per_cell, terms = self.loss_terms(data["x"], outputs, self._active)
            loss = global_mean(per_cell)
        if tables:
            self._step_tables(tables, tape.gradient(loss, [table.embeddings.value for table in tables]))
        return self._per_replica_logs(self._update_trackers(terms, outputs))

    def _per_replica_logs(self, logs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """The step's logs as Keras can reduce them across workers.

        Keras reduces every log of a multi-worker strategy with ``strategy.reduce("MEAN", v,
        axis=0)``, which fails on a scalar (tensorflow/tensorflow#72388); a ``(1,)`` tensor
        reduces to the same scalar. Other strategies and one device keep scalars.
        """
        if not multi_worker(self.distribute_strategy):
            return logs
        return {k: tf.reshape(v, [1]) for k, v in logs.items()}

    def _tables(self) -> list[Any]:
        """The representation tables of the training components that learn one latent per cell."""
        return [self.components[c].encoder for c in self._active if self.components[c].posterior == "representation"]

    @staticmethod
    def _step_tables(tables: Sequence[Any], gradients: Sequence[Any]) -> None:
        """One per-row Adam step of each table, on the rows the batch read (the gradient of a gather
        is ``IndexedSlices`` of exactly those rows).

        Under a multi-replica strategy each replica read other cells' rows, and a row's gradient
        is whole on the replica whose cell it is (the loss is a sum over cells). Every replica
        gathers all of them and takes the same step on its own copy of the table, so the copies
        stay equal without an all-reduce of the whole table: the step of one device on the
        global batch.
        """
        replica = tf.distribute.get_replica_context()
        for table, gradient in zip(tables, gradients):
            index, values = gradient.indices, gradient.values
            if replica is not None and replica.num_replicas_in_sync > 1:
                index, values = replica.all_gather(index, axis=0), replica.all_gather(values, axis=0)
            table.apply_gradient(index, values)

    def predict_step(self, data: Mapping[str, Any]) -> dict[str, tf.Tensor]:
        """Float32 posterior means of a batch for ``predict``: ``z_<c>``, ``z_hat_<c>``, when the
        prior clusters ``cluster_probabilities_<c>``, for a quantised latent ``code_<c>``
        (int32, the codebook index of the cell's code), and with a covariate model
        ``covariates_<c>`` (each cell's covariate representations)."""
        outputs = self(data, training=False, sample=False, decode=False)
        result = {}
        for name, out in outputs.items():
            # float32 whatever the dtype policy: under mixed precision layers return float16
            result[f"z_{name}"] = tf.cast(out["z_mean"], tf.float32)
            result[f"z_hat_{name}"] = tf.cast(out["z_hat"], tf.float32)
            if getattr(self.components[name].prior, "n_clusters", None):
                result[f"cluster_probabilities_{name}"] = self.components[name].prior.cluster_probabilities(
                    out["z_mean"]
                )
            if "codes" in out:
                result[f"code_{name}"] = out["codes"]
            if "covariates" in out:
                result[f"covariates_{name}"] = tf.cast(out["covariates"], tf.float32)
        return result
