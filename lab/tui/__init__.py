"""The interactive lab (`dropres-lab` with no command): a Textual client of the run store."""

from __future__ import annotations


def run_lab(store=None, experiments="experiments.toml", driver_settings=None, read_only=False):
    """Open the lab (imports Textual only when called); returns a line to print afterwards."""
    from .app import run_lab as run
    from ..workers.settings import DriverSettings

    return run(store, experiments, driver_settings or DriverSettings(), read_only)
