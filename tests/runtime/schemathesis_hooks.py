"""Checks of our own for schemathesis runs against the runtime (loaded with SCHEMATHESIS_HOOKS by
test_hostile_requests.py): the built-in checks say whether an answer matches the OpenAPI; these
say whether it gives away what it must not."""

from __future__ import annotations

from typing import Any

import schemathesis

from .conftest import API_KEY

# The only 5xx the OpenAPI documents: the provider failed, the agent is not built, the provider
# did not answer in time.
DOCUMENTED_5XX = {502, 503, 504}
STACK_TRACE_MARKS = ("Traceback", 'File "')


@schemathesis.check
def server_error_is_documented(ctx: Any, response: Any, case: Any) -> None:
    if response.status_code >= 500 and response.status_code not in DOCUMENTED_5XX:
        raise AssertionError(f"undocumented server error {response.status_code}: {response.text}")


@schemathesis.check
def no_stack_trace(ctx: Any, response: Any, case: Any) -> None:
    for mark in STACK_TRACE_MARKS:
        if mark in response.text:
            raise AssertionError(f"a stack trace ({mark!r}) in the answer: {response.text[:500]}")


@schemathesis.check
def no_secret(ctx: Any, response: Any, case: Any) -> None:
    headers = " ".join(f"{k}: {v}" for k, v in response.headers.items())
    if API_KEY in response.text or API_KEY in headers:
        raise AssertionError("the model API key is in the answer")
