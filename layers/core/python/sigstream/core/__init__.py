"""Pure core shared by both functions: signing, SW1, URL issuing, routes, SigV4, settings, errors (no I/O, no env, no clock)."""
