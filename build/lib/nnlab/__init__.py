"""nnlab: a fast PyTorch lab bench for classic CNN and RNN experiments."""

__version__ = "0.1.0"
