"""The one numeric configuration shared by the stages, the CLIs, the benchmarks and the tests.

Same params and data give byte-identical metrics on one machine; machines of one kind differ by less than the
gate's tolerance (docs/evaluation.md). Two parts, because TensorFlow reads some settings only when it loads:
- `ENV`, applied by `src/__init__.py` before anything can import TensorFlow: oneDNN on (measured: two runs on one
  machine give byte-identical metrics with it, at 2.1x the training speed; machines of other CPU features may
  round differently, which the gate's tolerance covers), TensorFlow's C++ log quiet.
- `configure(seed)`, called before a model is built: seeds, a pinned thread count, deterministic ops on CPU.
An explicitly exported variable wins over `ENV` (e.g. TF_ENABLE_ONEDNN_OPTS=0).
"""
from __future__ import annotations

import logging
import os

ENV = {"TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
THREADS_VAR = "COLORIZER_THREADS"
# TensorFlow splits sums by thread, so the thread count changes the rounding, and a short training run amplifies
# that: measured, 1 instead of 2 threads moves the default pipeline's eval RMSE by 1.26. Pinned to CI's 2 cores
# so every machine computes the same sums; COLORIZER_THREADS=0 uses all cores (faster, not comparable to CI).
DEFAULT_THREADS = 2

log = logging.getLogger(__name__)


def apply_env() -> None:
    for key, value in ENV.items():
        os.environ.setdefault(key, value)


def threads() -> int:
    wanted = int(os.environ.get(THREADS_VAR, DEFAULT_THREADS))
    return wanted if wanted > 0 else os.cpu_count() or 1


def configure(seed: int) -> None:
    """Seeds for Python, NumPy and the backend; on TensorFlow, a fixed thread count and deterministic CPU ops."""
    import keras

    keras.utils.set_random_seed(seed)
    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    n = threads()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError:  # the runtime already started in this process (tests): it must have started with these
        if tf.config.threading.get_intra_op_parallelism_threads() not in (0, n):
            log.warning("TensorFlow already runs with %d threads, not %d: numbers may differ",
                        tf.config.threading.get_intra_op_parallelism_threads(), n)
    if not tf.config.list_physical_devices("GPU"):
        tf.config.experimental.enable_op_determinism()
