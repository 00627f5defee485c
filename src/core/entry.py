"""The shared start of every stage's main(): --help from the module docstring, logging, typed params."""
from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import Any

from src.core import params


def stage_main(doc: str | None, section: str, run: Callable[[Any], Any]) -> Any:
    """Parse the (flag-less) command line, configure logging once, call `run` with the section's params."""
    argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(params.load_or_exit(section))
