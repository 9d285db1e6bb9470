"""The `aiagent` command line."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .config import DEFAULT_CONFIG_PATH, AgentConfig, ConfigError, load_agent_config


class _BadConfig(Exception):
    """Reported as one line on stderr, exit status 2."""


def _load(args: argparse.Namespace) -> AgentConfig:
    try:
        return load_agent_config(args.file)
    except ConfigError as exc:
        raise _BadConfig(str(exc)) from None


def _check(args: argparse.Namespace) -> int:
    sys.stdout.write(_load(args).to_yaml())
    return 0


def _run(args: argparse.Namespace) -> int:
    config = _load(args)
    from .server import serve  # FastAPI and uvicorn load only for `run`

    return serve(config, host=args.host, port=args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiagent", description="Serve a CrewAI or LangChain agent described by agent.yaml."
    )
    parser.add_argument("--version", action="version", version=f"aiagent {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "check",
        help="validate agent.yaml or an AIAgent manifest and print the agent.yaml it stands for",
    )
    check.add_argument("file", help="agent.yaml or an AIAgent manifest")
    check.set_defaults(func=_check)
    run = commands.add_parser("run", help="serve the agent over HTTP")
    run.add_argument(
        "file",
        nargs="?",
        default=str(DEFAULT_CONFIG_PATH),
        help=f"agent.yaml or an AIAgent manifest (default {DEFAULT_CONFIG_PATH})",
    )
    run.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    run.add_argument("--port", type=int, default=8080, help="port to listen on (8080)")
    run.set_defaults(func=_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except _BadConfig as exc:
        print(f"aiagent: {exc}", file=sys.stderr)
        return 2
    return code


def console() -> None:
    """Entry point of the `aiagent` console script."""
    sys.exit(main())


if __name__ == "__main__":
    console()
