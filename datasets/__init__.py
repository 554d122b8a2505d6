"""The data layer (``harness.datasets``): DICOM reading, dataset indexing and checks, samples for both models."""
