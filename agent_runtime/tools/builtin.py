"""The runtime's built-in tools: plain functions of one string, offered as ToolSpecs.

Both are safe to hand to a model: the calculator evaluates arithmetic only (no names, no calls),
and http_get fetches only from hosts the agent's config allows.
"""

from __future__ import annotations

import ast
import asyncio
import fnmatch
import math
import operator
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from .base import ToolSpec

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
MAX_EXPONENT = 1000
HTTP_GET_MAX_BYTES = 64 * 1024


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression (+ - * / // % ** and parentheses) and return the result."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
        value = _evaluate(tree.body)
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError) as exc:
        return f"error: {exc}"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return str(value)


def _evaluate(node: ast.expr) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        number: int | float = node.value  # type: ignore[assignment]  # checked just above
        return number
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ValueError("exponent too large")
        result: int | float = _BINARY[type(node.op)](left, right)
        if isinstance(result, float) and not math.isfinite(result):
            raise ValueError("result is not finite")
        return result
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        unary: int | float = _UNARY[type(node.op)](_evaluate(node.operand))
        return unary
    raise ValueError("only numbers and + - * / // % ** ( ) are allowed")


def host_allowed(url: str, allowed_hosts: list[str]) -> bool:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        return False
    return any(fnmatch.fnmatchcase(host, pattern.lower()) for pattern in allowed_hosts)


def make_http_get(allowed_hosts: list[str], timeout: float = 10.0) -> Callable[[str], str]:
    """An http_get tool bound to an allow-list of hosts."""

    def http_get(url: str) -> str:
        """Fetch a web page or API response by URL (GET) and return its text (first 64 KiB)."""
        if not host_allowed(url, allowed_hosts):
            return f"error: {url} is not on this agent's list of allowed hosts"
        try:
            # No redirects: a redirect could leave the allowed hosts.
            response = httpx.get(url, timeout=timeout, follow_redirects=False)
        except httpx.HTTPError as exc:
            return f"error: {type(exc).__name__}: {exc}"
        body = response.text[:HTTP_GET_MAX_BYTES]
        return f"HTTP {response.status_code}\n{body}"

    return http_get


def single_argument_tool(
    name: str, description: str, function: Callable[[str], str], argument: str
) -> ToolSpec:
    """A ToolSpec for a blocking function of one string argument."""

    def blocking(arguments: dict[str, Any]) -> str:
        return function(str(arguments.get(argument, "")))

    async def call(arguments: dict[str, Any]) -> str:
        return await asyncio.to_thread(blocking, arguments)

    parameters = {
        "type": "object",
        "properties": {argument: {"type": "string", "description": description}},
        "required": [argument],
    }
    return ToolSpec(name, description, parameters, call, blocking)


def builtin_tools(names: list[str], allowed_hosts: list[str]) -> list[ToolSpec]:
    """The tools an agent.yaml asks for, in its order."""
    catalogue = {
        "calculator": lambda: single_argument_tool(
            "calculator",
            "Evaluate an arithmetic expression such as (12.5 * 4) / 2. Input: the expression.",
            calculate,
            "expression",
        ),
        "http_get": lambda: single_argument_tool(
            "http_get",
            "Fetch a URL with HTTP GET and return the response text. Input: the URL.",
            make_http_get(allowed_hosts),
            "url",
        ),
    }
    unknown = sorted(set(names) - catalogue.keys())
    if unknown:
        raise ValueError(f"unknown tools {unknown}; built-in tools are {sorted(catalogue)}")
    return [catalogue[name]() for name in names]
