"""Model registry (``harness.models``): arrives with the models issue."""
