"""Every command answers --help."""
import runpy
import sys

import pytest

COMMANDS = ["src.stages.download", "src.stages.hsv_split", "src.stages.shard", "src.stages.train",
            "src.stages.evaluate", "src.colorize", "src.tune", "src.gate", "src.profile", "src.results", "src.calibrate",
            "src.app", "src.publish", "src.export", "src.mix", "benchmarks.data_pipeline", "benchmarks.scale", "benchmarks.training", "benchmarks.colorize", "benchmarks.app", "benchmarks.load", "benchmarks.runtime", "benchmarks.quantised",
            "benchmarks.video"]


@pytest.mark.parametrize("module", COMMANDS)
# modules that earlier tests imported: runpy warns, and still runs a fresh copy as __main__
@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")
def test_help(module, monkeypatch, capsys):
    """`python -m <module> --help`, run in this process (runpy executes the module as __main__, as python -m
    does; sixteen interpreter starts that import TensorFlow cost about a minute of CPU)."""
    monkeypatch.setattr(sys, "argv", [module.rsplit(".", 1)[-1] + ".py", "--help"])
    with pytest.raises(SystemExit) as exited:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    assert exited.value.code in (0, None)
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "python -m" in out
