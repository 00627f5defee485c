"""Every command answers --help."""
import subprocess
import sys

import pytest

from tests.repo import env

COMMANDS = ["src.stages.download", "src.stages.hsv_split", "src.stages.shard", "src.stages.train",
            "src.stages.evaluate", "src.colorize", "src.tune", "src.gate", "src.profile", "src.results", "src.calibrate",
            "src.app", "benchmarks.data_pipeline", "benchmarks.training", "benchmarks.colorize", "benchmarks.app"]


@pytest.mark.parametrize("module", COMMANDS)
def test_help(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], env=env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage:") and "python -m" in result.stdout
