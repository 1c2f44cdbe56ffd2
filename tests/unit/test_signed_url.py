"""Our URL scheme: test vectors, tamper matrix, parser-differential cases, and never-raise properties."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sigstream.core.errors import BadRequestError, ExpiredError, InvalidSignatureError, SigstreamError
from sigstream.core.signed_url import Grant, sign_query, verify_query

KEYS = {"k1": b"0123456789abcdef0123456789abcdef", "k0": b"retired-but-present-key-material"}
NOW = 1_800_000_000
GRANT = Grant(
    method="POST",
    path="/v1/chat/completions",
    subject="user-42",
    not_before=NOW,
    expires=NOW + 300,
    conversation_id="conv_abcdefgh12345678",
    models=("gpt-4o-mini", "gpt-4o"),
    max_tokens=512,
    nonce="n0nce-0123456789abcdef",
)

# Test vectors of the scheme (docs/url-scheme.md), computed independently from the documented canonical form.
VECTORS = [
    (
        Grant("POST", "/v1/chat/completions", "alice", 1_700_000_000, 1_700_000_300, "conv_0123456789abcdef"),
        "k1",
        "sv=1&kid=k1&sub=alice&cid=conv_0123456789abcdef&nbf=1700000000&exp=1700000300&sig=",
    ),
    (
        Grant("GET", "/v1/conversations", "bob@example.com", 1_700_000_000, 1_700_003_600),
        "k1",
        "sv=1&kid=k1&sub=bob%40example.com&nbf=1700000000&exp=1700003600&sig=",
    ),
    (GRANT, "k1", None),
]


def verify(query: str, method: str = "POST", path: str = "/v1/chat/completions", now: float = NOW + 10) -> Grant:
    return verify_query(method=method, path=path, raw_query=query, keys=KEYS, now=now, max_lifetime=3600)


def test_vectors_are_stable() -> None:
    expected = {
        0: "HKwBoKnaWJJLNBF7LB9lRqVZivMI4h2rrK8XLuE6Q8s",
        1: "mLXUCHpXoOw4nr1jkmEs3dRGAkWqP37w4PTQSNIEgx4",
    }
    for index, (grant, kid, prefix) in enumerate(VECTORS[:2]):
        query = sign_query(grant, kid, KEYS[kid])
        assert query.startswith(prefix)  # type: ignore[arg-type]
        assert dict(parse_qsl(query))["sig"] == expected[index]


def test_round_trip_keeps_every_field() -> None:
    query = sign_query(GRANT, "k1", KEYS["k1"])
    assert verify(query) == GRANT


def test_retired_key_still_verifies_until_removed() -> None:
    query = sign_query(GRANT, "k0", KEYS["k0"])
    assert verify(query).subject == "user-42"
    with pytest.raises(InvalidSignatureError):
        verify_query(
            method="POST", path=GRANT.path, raw_query=query, keys={"k1": KEYS["k1"]}, now=NOW, max_lifetime=3600
        )


@pytest.mark.parametrize(
    "name,value",
    [
        ("sub", "user-43"),
        ("cid", "conv_abcdefgh12345679"),
        ("nbf", str(NOW - 1)),
        ("exp", str(NOW + 301)),
        ("models", "gpt-4o-mini,gpt-5"),
        ("max_tokens", "513"),
        ("nonce", "n0nce-0123456789abcdeF"),
        ("kid", "k0"),
    ],
)
def test_every_parameter_is_bound(name: str, value: str) -> None:
    params = dict(parse_qsl(sign_query(GRANT, "k1", KEYS["k1"])))
    params[name] = value
    with pytest.raises(InvalidSignatureError):
        verify(urlencode(params))


def test_removing_an_optional_parameter_breaks_the_signature() -> None:
    for name in ("cid", "models", "max_tokens", "nonce"):
        params = dict(parse_qsl(sign_query(GRANT, "k1", KEYS["k1"])))
        del params[name]
        with pytest.raises(InvalidSignatureError):
            verify(urlencode(params))


def test_method_and_path_are_bound() -> None:
    query = sign_query(GRANT, "k1", KEYS["k1"])
    with pytest.raises(InvalidSignatureError):
        verify(query, method="GET")
    with pytest.raises(InvalidSignatureError):
        verify(query, path="/v1/conversations")


def test_signature_case_and_truncation() -> None:
    params = dict(parse_qsl(sign_query(GRANT, "k1", KEYS["k1"])))
    sig = params["sig"]
    params["sig"] = sig.swapcase()
    with pytest.raises(InvalidSignatureError):
        verify(urlencode(params))
    params["sig"] = sig[:-1]
    with pytest.raises(BadRequestError):
        verify(urlencode(params))


def test_expiry_boundaries_with_skew() -> None:
    query = sign_query(GRANT, "k1", KEYS["k1"])
    assert verify(query, now=GRANT.expires + 30)  # within the 30 s skew allowance
    with pytest.raises(ExpiredError):
        verify(query, now=GRANT.expires + 31)
    assert verify(query, now=GRANT.not_before - 30)
    with pytest.raises(ExpiredError):
        verify(query, now=GRANT.not_before - 31)


def test_lifetime_beyond_the_maximum_is_refused() -> None:
    long = Grant("POST", "/v1/chat/completions", "u", NOW, NOW + 7200)
    with pytest.raises(InvalidSignatureError):
        verify(sign_query(long, "k1", KEYS["k1"]))


@pytest.mark.parametrize(
    "query,param",
    [
        ("sv=1&kid=k1&sub=a&sub=b&nbf=1&exp=2&sig=" + "A" * 43, "sub"),  # duplicated parameter
        ("sv=2&kid=k1&sub=a&nbf=1&exp=2&sig=" + "A" * 43, "sv"),
        ("sv=1&kid=k1&sub=a%0D%0Ab&nbf=1&exp=2&sig=" + "A" * 43, "sub"),  # CRLF in the subject
        ("sv=1&kid=k1&sub=a&cid=..%2F..%2Fx&nbf=1&exp=2&sig=" + "A" * 43, "cid"),  # traversal
        ("sv=1&kid=k1&sub=a&cid=" + "c" * 65 + "&nbf=1&exp=2&sig=" + "A" * 43, "cid"),  # over-long
        ("sv=1&kid=k1&sub=a&nbf=01&exp=2&sig=" + "A" * 43, "nbf"),  # non-canonical number
        ("sv=1&kid=k1&sub=a&nbf=%2B1&exp=2&sig=" + "A" * 43, "nbf"),
        ("sv=1&kid=k1&sub=%E2%80%AEa&nbf=1&exp=2&sig=" + "A" * 43, "sub"),  # bidi override
        ("sv=1&kid=k1&sub=%FF&nbf=1&exp=2&sig=" + "A" * 43, "query"),  # invalid UTF-8
        ("sv=1&kid=k1&nbf=1&exp=2&sig=" + "A" * 43, "sub"),
    ],
)
def test_malformed_urls_name_the_parameter(query: str, param: str) -> None:
    with pytest.raises(BadRequestError) as err:
        verify(query)
    assert err.value.param == param


def test_encoding_variants_of_the_same_values_are_equivalent() -> None:
    """Parser differential: %-encoding of unreserved characters changes nothing signed."""
    query = sign_query(GRANT, "k1", KEYS["k1"])
    assert verify(query.replace("sub=user-42", "sub=user%2D42")) == GRANT
    # '+' decodes to a space, which no subject may contain: never a silent alias of another subject.
    with pytest.raises(BadRequestError):
        verify(query.replace("sub=user-42", "sub=user+42"))


@given(st.text(max_size=300), st.sampled_from(["GET", "POST", "DELETE"]), st.floats(allow_nan=False))
def test_verification_never_raises_anything_but_our_errors(query: str, method: str, now: float) -> None:
    try:
        verify_query(method=method, path="/v1/chat/completions", raw_query=query, keys=KEYS, now=now, max_lifetime=3600)
    except SigstreamError:
        pass


@given(
    st.dictionaries(st.sampled_from(["sv", "kid", "sub", "cid", "nbf", "exp", "sig", "nonce"]), st.text(max_size=50))
)
def test_structured_garbage_never_raises_anything_but_our_errors(params: dict[str, str]) -> None:
    try:
        verify(urlencode(params))
    except SigstreamError:
        pass
