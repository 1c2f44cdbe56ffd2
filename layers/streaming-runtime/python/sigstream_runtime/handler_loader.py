"""Import the `_HANDLER` function once, classifying failures the way awslambdaric does."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

Handler = Callable[[Any, Any], Any]


class HandlerLoadError(Exception):
    """The handler could not be imported; carries the Runtime.* error type."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def load_handler(spec: str) -> Handler:
    """Resolve "package.module.function" to a callable."""
    modname, _, fname = spec.rpartition(".")
    if not modname or not fname:
        raise HandlerLoadError("Runtime.MalformedHandlerName", f"Bad handler '{spec}'")
    if modname.split(".")[0] in sys.builtin_module_names:
        raise HandlerLoadError(
            "Runtime.BuiltInModuleConflict", f"Cannot use built-in module {modname} as a handler module"
        )
    try:
        module = importlib.import_module(modname.replace("/", "."))
    except ImportError as exc:
        raise HandlerLoadError("Runtime.ImportModuleError", f"Unable to import module '{modname}': {exc}") from exc
    except SyntaxError as exc:
        raise HandlerLoadError("Runtime.UserCodeSyntaxError", f"Syntax error in module '{modname}': {exc}") from exc
    handler = getattr(module, fname, None)
    if not callable(handler):
        raise HandlerLoadError("Runtime.HandlerNotFound", f"Handler '{fname}' missing on module '{modname}'")
    return handler  # type: ignore[no-any-return]
