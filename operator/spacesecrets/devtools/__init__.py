"""Local development and test tooling: not needed by the operator at run time."""
