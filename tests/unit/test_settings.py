"""SignSettings: which models the Sign function refuses to sign, from the Stream function's model settings."""

from __future__ import annotations

from sigstream.core.settings import SignSettings

KEYS = "arn:keys"
BASE = {"SIGSTREAM_SIGNING_KEYS_SECRET": KEYS, "SIGSTREAM_STREAM_URL": "https://stream.example/"}


def test_models_unknown_to_the_sign_function_are_left_to_the_stream_function() -> None:
    settings = SignSettings.from_env(BASE)
    assert settings.models is None
    assert settings.forbidden_models(("anything",)) == ()


def test_only_the_default_and_allowed_models_are_signed() -> None:
    env = {**BASE, "SIGSTREAM_DEFAULT_MODEL": "gpt-4o-mini", "SIGSTREAM_ALLOWED_MODELS": "gpt-4o,o3"}
    settings = SignSettings.from_env(env)
    assert settings.models == ("gpt-4o-mini", "gpt-4o", "o3")
    assert settings.forbidden_models(("gpt-4o", "gpt-5", "o3", "o1")) == ("gpt-5", "o1")
    assert settings.forbidden_models(()) == ()


def test_a_wildcard_allows_every_model() -> None:
    env = {**BASE, "SIGSTREAM_DEFAULT_MODEL": "gpt-4o-mini", "SIGSTREAM_ALLOWED_MODELS": "*"}
    assert SignSettings.from_env(env).forbidden_models(("gpt-5",)) == ()
