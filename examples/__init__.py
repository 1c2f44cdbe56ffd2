"""Examples of using Sigstream from other software."""
