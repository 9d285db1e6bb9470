"""`python -m agent_runtime` is the `aiagent` command."""

from .cli import console

console()
