"""The runtime loop: load the handler once, then fetch, run and answer invocations."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from typing import Any

from sigstream_runtime.api_client import Invocation, RuntimeApiClient, RuntimeApiError, StreamAbortedError
from sigstream_runtime.context import LambdaContext
from sigstream_runtime.handler_loader import Handler, HandlerLoadError, load_handler
from sigstream_runtime.marshal import decode_event, encode_result, error_payload, function_error_type
from sigstream_runtime.response import PRELUDE_CONTENT_TYPE, StreamingResponse, as_bytes, in_band_error


def log_error(payload: dict[str, Any]) -> None:
    """One JSON line on stderr, which Lambda ships to CloudWatch."""
    sys.stderr.write(json.dumps({"level": "ERROR", **payload}) + "\n")
    sys.stderr.flush()


class Worker:
    """One invocation loop with its own Runtime API connection (and event loop, if needed)."""

    def __init__(self, client: RuntimeApiClient, handler: Handler) -> None:
        self.client = client
        self.handler = handler
        self._loop: Any = None

    def run_forever(self) -> None:
        """Serve invocations until the environment is shut down."""
        while True:
            inv = self.client.next_invocation()
            try:
                self.handle(inv)
            except RuntimeApiError as exc:
                # The answer was refused, e.g. 410 once the invocation timed out: Lambda Managed Instances
                # let a late worker run on, and it must then serve the next invocation, not exit.
                log_error(
                    {"errorMessage": str(exc), "errorType": "Runtime.ResponseRefused", "requestId": inv.request_id}
                )

    def _event_loop(self) -> Any:
        # asyncio is imported only by handlers that need it: it costs cold-start time.
        if self._loop is None:
            import asyncio

            self._loop = asyncio.new_event_loop()
        return self._loop

    def handle(self, inv: Invocation) -> None:
        """Run the handler for one invocation and send its response or error."""
        if inv.trace_id:
            os.environ["_X_AMZN_TRACE_ID"] = inv.trace_id
        else:
            os.environ.pop("_X_AMZN_TRACE_ID", None)
        try:
            context = LambdaContext(
                aws_request_id=inv.request_id,
                invoked_function_arn=inv.function_arn,
                deadline_ms=inv.deadline_ms,
                trace_id=inv.trace_id,
                client_context=json.loads(inv.client_context) if inv.client_context else None,
                identity=json.loads(inv.cognito_identity) if inv.cognito_identity else None,
                tenant_id=inv.tenant_id,
            )
            result = self.handler(decode_event(inv.body, inv.content_type), context)
            if hasattr(result, "__await__"):
                result = self._event_loop().run_until_complete(result)
            if isinstance(result, StreamingResponse):
                self._stream(inv, result)
                return
            body, content_type = encode_result(result)
        except RuntimeApiError:
            raise  # our answer was refused: not the handler's failure, and /error would be refused too
        except Exception as exc:
            self._fail(inv, exc)
            return
        self.client.post_response(inv, body, content_type)

    def _fail(self, inv: Invocation, exc: BaseException) -> None:
        payload = error_payload(exc, inv.request_id)
        log_error(payload)
        self.client.post_error(inv, function_error_type(exc), payload)

    def _chunks(self, response: StreamingResponse) -> Iterator[bytes]:
        body = response.body
        if hasattr(body, "__aiter__"):
            loop, aiter = self._event_loop(), body.__aiter__()
            while True:
                try:
                    chunk = loop.run_until_complete(aiter.__anext__())
                except StopAsyncIteration:
                    return
                yield as_bytes(chunk)
        else:
            for chunk in body:
                yield as_bytes(chunk)

    def _stream(self, inv: Invocation, response: StreamingResponse) -> None:
        chunks = self._chunks(response)
        # Nothing is sent until the first non-empty chunk exists, so a failure up to there
        # is still a clean /error; an empty body still sends the prelude (no hung client).
        try:
            first = next((c for c in chunks if c), b"")
        except Exception as exc:
            self._fail(inv, exc)
            response.run_after()
            return
        try:
            self.client.stream_response(inv, PRELUDE_CONTENT_TYPE, self._rest(inv, response, first, chunks))
        finally:
            response.run_after()  # the response is complete: the client is not waiting for this

    def _rest(
        self, inv: Invocation, response: StreamingResponse, first: bytes, chunks: Iterator[bytes]
    ) -> Iterator[bytes]:
        tail = first[-2:]
        try:
            yield response.prelude() + first
            for chunk in chunks:
                if chunk:  # an empty chunk would end the HTTP body early
                    tail = chunk[-2:]
                    yield chunk
        except GeneratorExit:
            raise
        except Exception as exc:
            payload = error_payload(exc, inv.request_id)
            log_error(payload)
            error_type = function_error_type(exc)
            # Trailers carry the error to Lambda; emulators and browsers never see them, so say it in the body
            # too where the content type can (only for exceptions: a handler's own error events are its own).
            notice = in_band_error(response.content_type, error_type, inv.request_id, tail)
            if notice:
                yield notice
            raise StreamAbortedError(error_type, payload) from exc
        finally:
            close = getattr(response.body, "close", None)
            if callable(close):
                close()


def threads_before_fork() -> list[str]:
    """Names of threads other than this one (a handler that started threads at import)."""
    threading = sys.modules.get("threading")  # not imported: no thread was started through it
    if threading is None:
        return []
    return [t.name for t in threading.enumerate() if t is not threading.current_thread()]


def fork_workers(count: int) -> None:
    """Lambda Managed Instances: serve `count` invocations at once, one process each.

    Processes rather than threads: `_X_AMZN_TRACE_ID` is process-global, as in awslambdaric.
    """
    threads = threads_before_fork()
    if threads:  # they do not exist in the workers, and any lock they hold stays held there
        sys.stderr.write(
            json.dumps(
                {
                    "level": "WARNING",
                    "message": "threads exist when the runtime forks its workers; a lock they hold deadlocks them",
                    "threads": threads,
                }
            )
            + "\n"
        )
        sys.stderr.flush()
    for _ in range(count - 1):
        if os.fork() == 0:
            return


def main() -> None:
    """Start the runtime: init once, then loop forever."""
    client = RuntimeApiClient(os.environ["AWS_LAMBDA_RUNTIME_API"])
    try:
        handler = load_handler(os.environ.get("_HANDLER", ""))
    except HandlerLoadError as exc:
        payload = {"errorMessage": str(exc), "errorType": exc.error_type, "requestId": "", "stackTrace": []}
        log_error(payload)
        client.post_init_error(exc.error_type, payload)
        sys.exit(1)
    except Exception as exc:  # the handler module raised while importing
        payload = error_payload(exc)
        log_error(payload)
        client.post_init_error(function_error_type(exc, "Runtime"), payload)
        sys.exit(1)
    concurrency = int(os.environ.get("AWS_LAMBDA_MAX_CONCURRENCY", "1") or 1)
    if concurrency > 1:
        client.close()  # each worker process opens its own keep-alive connection
        fork_workers(concurrency)
        client = RuntimeApiClient(os.environ["AWS_LAMBDA_RUNTIME_API"])
    Worker(client, handler).run_forever()
