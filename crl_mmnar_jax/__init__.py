"""CRL-MMNAR in JAX/Flax NNX (arXiv 2509.17228), with leak-free evaluation."""

__version__ = "0.1.0"
