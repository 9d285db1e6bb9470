"""The `aiagent` command line."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .config import ConfigError, load_agent_config


def _check(args: argparse.Namespace) -> int:
    try:
        config = load_agent_config(args.file)
    except ConfigError as exc:
        print(f"aiagent: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(config.to_yaml())
    return 0


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


def console() -> None:
    """Entry point of the `aiagent` console script."""
    sys.exit(main())


if __name__ == "__main__":
    console()
