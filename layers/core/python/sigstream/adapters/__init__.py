"""Adapters shared by both functions: the AWS JSON client and the secret cache (network I/O lives here)."""
