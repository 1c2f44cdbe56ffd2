"""The smallest handlers: a buffered dict, and a one-chunk stream."""

try:
    from sigstream_runtime import StreamingResponse
except ImportError:  # awslambdaric runs only `buffered`
    StreamingResponse = None


def buffered(event, context):
    return {"statusCode": 200, "body": "ok"}


def streamed(event, context):
    return StreamingResponse(iter([b"x"]), headers={"content-type": "text/plain"})
