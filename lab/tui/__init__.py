"""The interactive lab (`dropres-lab` with no command): a Textual client of the run store."""

from __future__ import annotations


def run_lab(store=None, experiments="experiments.toml", driver_settings=None):
    """Open the lab (imports Textual only when called); returns a line to print afterwards."""
    from .app import run_lab as run

    return run(store, experiments) if driver_settings is None else run(store, experiments, driver_settings)
