"""Apply a params profile (a partial params.yaml) to params.yaml, keeping its comments, or run it as a DVC experiment.

    python -m src.profile experiments/gpu.yaml                 # merge into params.yaml, then `dvc repro`
    python -m src.profile experiments/gpu.yaml --exp-run       # `dvc exp run -S ...`: params.yaml untouched
    python -m src.profile experiments/gpu.yaml --set download.sha256=<hex>   # extra overrides on top
"""
from __future__ import annotations

import argparse
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML

from src.core.files import write_text
from src.core.paths import PARAMS_FILE


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{'train': {'epochs': 3}} -> {'train.epochs': 3}; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def parse_sets(items: list[str]) -> dict[str, Any]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set needs KEY=VALUE, got {item!r}")
        pairs[key] = yaml.safe_load(value)
    return pairs


def merge(overrides: dict[str, Any], path: Path = PARAMS_FILE) -> None:
    """Write dotted-key overrides into params.yaml in place, comments kept; unknown keys are refused."""
    rt = YAML()
    rt.preserve_quotes = True
    doc = rt.load(path.read_text())
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = doc
        for key in parents:
            if key not in node:
                raise KeyError(f"{dotted}: no section {key!r} in {path}")
            node = node[key]
        if leaf not in node:
            raise KeyError(f"{dotted}: no key {leaf!r} in {path} (typo?)")
        node[leaf] = value
    buffer = io.StringIO()
    rt.dump(doc, buffer)
    write_text(path, buffer.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", type=Path, help="a YAML file shaped like params.yaml, holding only what changes")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra dotted overrides")
    parser.add_argument("--exp-run", action="store_true", help="run `dvc exp run` with the overrides instead")
    args = parser.parse_args(argv)
    overrides = flatten(yaml.safe_load(args.profile.read_text()) or {}) | parse_sets(args.set)
    if args.exp_run:
        command = ["dvc", "exp", "run"]
        for key, value in overrides.items():
            command += ["-S", f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"]
        print(" ".join(command))
        return subprocess.call(command)
    merge(overrides)
    print(f"{PARAMS_FILE.name}: {len(overrides)} values from {args.profile}; run `dvc repro`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
