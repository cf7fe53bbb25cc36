"""tf.distribute strategies for training and evaluation, and which worker writes files.

`--strategy`: `auto` (several workers in `TF_CONFIG` -> multi_worker, several
GPUs -> mirrored, else the default single-device strategy), `one_device`,
`mirrored` (all local GPUs, or the visible CPU devices), `multi_worker`
(`MultiWorkerMirroredStrategy`, cluster and task from the standard
`TF_CONFIG`) or `tpu` (`TPUStrategy` on the Cloud TPU named by `--tpu`).
"""

import hashlib
import json
import os
import shutil
import tempfile

import numpy as np

from longbert_tf.framework import tf

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")


def _tf_config_workers() -> int:
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def make_strategy(name: str, tpu: str | None = None) -> tf.distribute.Strategy:
    """The strategy `name` names (see the module docstring)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {STRATEGIES}")
    gpus = tf.config.list_physical_devices("GPU")  # leaves the runtime uninitialised
    if name == "auto":
        if _tf_config_workers() > 1:
            name = "multi_worker"
        elif len(gpus) > 1:
            name = "mirrored"
        else:
            return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        devices = (
            None if gpus else [device.name for device in tf.config.list_logical_devices("CPU")]
        )
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        if _tf_config_workers() < 1:
            raise ValueError(
                "strategy multi_worker needs a TF_CONFIG with the cluster and this task"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if not tpu:
        raise ValueError("strategy tpu needs --tpu (the TPU's name or grpc:// address)")
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def run_on_replicas(fn, *args):
    """`fn(*args)` on every replica of the current strategy; returns the first replica's result.

    Layers loaded from a SavedModel inside a strategy's scope can only be
    called in a replica context; this builds or probes them there.
    """
    strategy = tf.distribute.get_strategy()
    return strategy.experimental_local_results(strategy.run(fn, args=args))[0]


def sum_over_workers(strategy: tf.distribute.Strategy, arrays: dict) -> dict:
    """Sums each worker's `{name: array}` over the workers of a multi-worker run.

    Every worker passes its own counts and gets the totals (one all-reduce per
    array); with a single worker the arrays are returned as they are.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return arrays
    local_replicas = len(strategy.extended.worker_devices)  # this worker's replicas

    def worker_share(context):  # a tf.distribute.experimental.ValueContext
        # Replicas are numbered worker by worker: the first local one carries the worker's counts.
        first = context.replica_id_in_sync_group % local_replicas == 0
        return {
            name: tf.constant(array) if first else tf.zeros(array.shape, array.dtype)
            for name, array in arrays.items()
        }

    shares = strategy.experimental_distribute_values_from_function(worker_share)
    return {
        name: strategy.reduce(tf.distribute.ReduceOp.SUM, share, axis=None).numpy()
        for name, share in shares.items()
    }


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Returns once every worker of a multi-worker run has reached it (at once otherwise)."""
    sum_over_workers(strategy, {"barrier": np.zeros([1], np.float32)})


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this task writes checkpoints, summaries and results (the chief, or worker 0)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if (
        resolver is None
        or not resolver.task_type
        or isinstance(strategy, tf.distribute.TPUStrategy)
    ):
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


class WriteDir:
    """Where this task writes: the model dir on the chief, a scratch folder elsewhere.

    Every worker of a multi-worker run takes part in saving checkpoints (a
    collective operation), but only the chief's copy is kept; the others
    write into a scratch folder named after the model dir and the task, which
    is emptied when the task starts (a killed run leaves it behind) and
    removed by `cleanup`.
    """

    def __init__(self, model_dir: str, strategy: tf.distribute.Strategy):
        self.chief = is_chief(strategy)
        if self.chief:
            self.root = model_dir
        else:
            run_id = hashlib.sha256(os.path.abspath(model_dir).encode()).hexdigest()[:12]
            task = f"{strategy.cluster_resolver.task_type}{strategy.cluster_resolver.task_id}"
            self.root = os.path.join(tempfile.gettempdir(), f"longbert-{run_id}-{task}")
            shutil.rmtree(self.root, ignore_errors=True)
            os.makedirs(self.root)

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def cleanup(self) -> None:
        if not self.chief:
            shutil.rmtree(self.root, ignore_errors=True)
