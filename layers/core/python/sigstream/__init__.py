"""Sigstream's shared layer: `sigstream.core` (pure) and `sigstream.adapters` (I/O)."""
