"""lnm-harness: train, compare and benchmark lymph-node metastasis models on pelvic MRI."""

__version__ = "0.1.0"
