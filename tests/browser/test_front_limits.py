"""A browser uploading more than 6 MB to a Function URL reads the 413 (no connection reset)."""

from __future__ import annotations

from typing import Any

from local.stack import LocalStack
from tests.helpers import new_subject, signed_url


def test_chromium_fetch_of_a_body_over_six_megabytes_gets_the_413(browser: Any, app_stack: LocalStack) -> None:
    url = signed_url(app_stack, subject=new_subject(), stateless=True)["url"]
    context = browser.new_context()
    page = context.new_page()
    try:
        result = page.evaluate(
            """async (url) => {
                const body = "x".repeat(7 * 1024 * 1024);
                try {
                    const response = await fetch(url, {method: "POST", body, headers: {"content-type": "text/plain"}});
                    return {status: response.status, body: await response.text()};
                } catch (error) {
                    return {status: 0, body: String(error)};
                }
            }""",
            url,
        )
    finally:
        context.close()
    assert result["status"] == 413, result
    assert "Request must be smaller than 6291456 bytes" in result["body"]
