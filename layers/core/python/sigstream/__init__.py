"""Sigstream's pure core: signing, SW1 verification, SSE framing, history windowing, errors."""
