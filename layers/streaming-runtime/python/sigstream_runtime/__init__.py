"""Streaming Lambda runtime client: return a StreamingResponse to stream, a dict to buffer."""

from sigstream_runtime.response import StreamingResponse

__all__ = ["StreamingResponse"]
