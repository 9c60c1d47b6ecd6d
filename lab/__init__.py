"""dropres-lab: a terminal lab for dropout and residual connections in transformer LMs."""

__version__ = "0.1.0"
