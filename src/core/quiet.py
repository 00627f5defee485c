"""Drop TensorFlow's native start-up lines from stderr: on a CPU machine they read like errors and are not.

TensorFlow 2.21 logs through absl before absl is initialised, and those lines ignore TF_CPP_MIN_LOG_LEVEL
(tensorflow/tensorflow#100442): "Could not find cuda drivers", "failed call to cuInit ... (303)", "All log messages
before absl::InitializeLog() ...". They come from C++, below Python's sys.stderr, so the filter sits on file
descriptor 2: a pipe whose reader thread passes every other byte through at once (progress bars stay live) and
drops only whole lines that match NOISE. Any other native line, and every Python traceback, still shows.
COLORIZER_NATIVE_LOGS=1 turns the filter off.
"""
from __future__ import annotations

import atexit
import os
import re
import sys
import threading

NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IWE]\d{4} [\d:.]+ +\d+ (port\.cc:\d+\] oneDNN custom operations are on"
    rb"|cudart_stub\.cc:\d+\] Could not find cuda drivers"
    rb"|cuda_platform\.cc:\d+\] failed call to cuInit"
    rb"|cuda_executor\.cc:\d+\] .*(kernel driver does not appear|CUDA_ERROR_NO_DEVICE)"
    rb"|cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized"
    rb"|meta_optimizer\.cc:\d+\] .*NodeDef mentions attribute use_unbounded_threadpool"
    rb"|.*NodeDef mentions attribute use_unbounded_threadpool)"
    rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.)"
)
MAYBE = re.compile(rb"^(W(A(R(N(I(N(G(:.*)?)?)?)?)?)?)?|[IWE]\d{0,4}( .*)?|T(o( .*)?)?)$")  # could still become NOISE
_installed: list = []


def native_stderr() -> None:
    """Route fd 2 through the filter, once per process; restored (and drained) at exit."""
    if _installed or os.environ.get("COLORIZER_NATIVE_LOGS") == "1":
        return
    try:
        sys.stderr.flush()
        original = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreter)
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    pump = threading.Thread(target=_pump, args=(read_end, original), name="quiet-stderr", daemon=True)
    pump.start()
    _installed.append(pump)

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(original, 2)  # the pipe's last write end closes: the pump drains it and stops
        pump.join(timeout=2)

    atexit.register(restore)


def _pump(read_end: int, out: int) -> None:
    pending = b""
    while chunk := os.read(read_end, 65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        data = b"".join(line + b"\n" for line in lines if not NOISE.match(line))
        if pending and not MAYBE.match(pending):  # a partial line that cannot be noise: show it now
            data, pending = data + pending, b""
        _write(out, data)
    if not NOISE.match(pending):
        _write(out, pending)
    os.close(read_end)


def _write(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]
