"""rigforge's on-box library: the hardware seam, the tuner, placement and the CLI."""

__version__ = "0.1.0"
