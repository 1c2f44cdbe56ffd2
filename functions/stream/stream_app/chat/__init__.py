"""Pure chat logic: request parsing, windowing, reply accumulation, SSE (no I/O, no env, no clock)."""
