"""The Stream function's application code (knows nothing of the Lambda Runtime API)."""
