"""Screens of the interactive lab; `lab.tui.app` wires them together."""
