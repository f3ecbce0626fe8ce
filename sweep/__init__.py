"""See what vision transformers learn: the paper's feature visualization, a model zoo, and sweeps."""

__version__ = "0.1.0"
