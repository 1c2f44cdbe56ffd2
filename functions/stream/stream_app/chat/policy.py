"""Deployment-level chat policy: what any URL of this deployment may ask for; a signed URL can only narrow it."""

from __future__ import annotations

from dataclasses import dataclass

from sigstream.core.settings import DEFAULT_CONTENT_PARTS, DEFAULT_FORWARDED_PARAMETERS, StreamSettings

# Always understood (and policed) by the parser itself, whatever the allow-list says.
STRUCTURAL_PARAMETERS = frozenset(
    {"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "n"}
)


@dataclass(frozen=True)
class ChatPolicy:
    """Limits on every chat request of a deployment (from settings; see docs/security.md)."""

    default_model: str
    allowed_models: tuple[str, ...] = ()  # besides the default model; "*" allows any
    max_output_tokens: int = 1024
    max_input_tokens: int = 8000
    max_input_chars: int = 32000
    max_request_messages: int = 32
    forwarded_parameters: tuple[str, ...] = DEFAULT_FORWARDED_PARAMETERS  # "*" forwards any
    output_tokens_parameter: str = "max_tokens"
    # Audio and files have no cost bound short of the context window, and a `file_id` names any file in the
    # gateway's provider account: a deployment opts in to them.
    content_parts: tuple[str, ...] = DEFAULT_CONTENT_PARTS

    @classmethod
    def from_settings(cls, settings: StreamSettings) -> ChatPolicy:
        """The policy the deployment's settings describe."""
        return cls(
            default_model=settings.default_model,
            allowed_models=settings.allowed_models,
            max_output_tokens=settings.max_output_tokens,
            max_input_tokens=settings.max_input_tokens,
            max_input_chars=settings.max_input_chars,
            max_request_messages=settings.max_request_messages,
            forwarded_parameters=settings.forwarded_parameters,
            output_tokens_parameter=settings.output_tokens_parameter,
            content_parts=settings.content_parts,
        )

    def allows_model(self, model: str) -> bool:
        """Whether the deployment lets any URL use this model."""
        return model == self.default_model or model in self.allowed_models or "*" in self.allowed_models

    def allows_parameter(self, name: str) -> bool:
        """Whether a top-level request parameter may be forwarded."""
        return name in STRUCTURAL_PARAMETERS or name in self.forwarded_parameters or "*" in self.forwarded_parameters
