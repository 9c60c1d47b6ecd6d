"""`python -m lab` is `dropres-lab`."""

from .cli import main

main()
