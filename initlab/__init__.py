"""initlab: a laboratory for initialization, normalization and signal propagation in deep MLPs."""

__version__ = "0.1.0"
