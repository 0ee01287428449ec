"""edgeota: over-the-air updates and model ops for generative AI on edge devices."""

__version__ = "0.1.0"
