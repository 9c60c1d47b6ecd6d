"""Widgets of the interactive lab (the Experiments forms live in `forms*.py`)."""
