"""The `aiagent` command line: `run` and `check` an agent here; `invoke`, `chat` and `status` an
agent in a cluster (agent_runtime/cluster.py, imported only by those three)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from . import __version__
from .config import DEFAULT_CONFIG_PATH, AgentConfig, ConfigError, load_agent_config

if TYPE_CHECKING:
    from .cluster import AgentCluster

# Exit statuses of the cluster commands (the README lists them).
EXIT_FAILED = 1  # the request failed: the line on stderr says why
EXIT_USAGE = 2  # bad arguments or agent.yaml (argparse uses 2 too)
EXIT_NOT_READY = 3  # `status`: the agent exists but its phase is not Ready
EXIT_INTERRUPTED = 130


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


class _Failed(Exception):
    """Reported as one line on stderr, exit status 1."""


def _connect(args: argparse.Namespace) -> AgentCluster:
    try:
        from .cluster import AgentCluster, ClusterError
    except ImportError as exc:  # httpx is in the runtime extra
        raise _Failed(
            f"the cluster commands need {exc.name}: pip install 'aiagent-operator[runtime]'"
        ) from None
    try:
        return AgentCluster.connect(args.kubeconfig, args.context, args.namespace, args.timeout)
    except ClusterError as exc:
        raise _Failed(str(exc)) from None


def _cluster_call(args: argparse.Namespace, command: Callable[[AgentCluster], int]) -> int:
    """Runs `command(cluster)`; a ClusterError becomes one line on stderr."""
    from .cluster import ClusterError

    with _connect(args) as cluster:
        try:
            code = command(cluster)
        except ClusterError as exc:
            raise _Failed(str(exc)) from None
    return code


def _write_stream(pieces: Iterator[str]) -> str:
    """Prints each piece as it comes (flushed: a pipe would hold it otherwise); the whole. An
    answer cut short still ends its line, before the error's line on stderr."""
    text = []
    try:
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
            text.append(piece)
    finally:
        if text or sys.exc_info()[0] is None:
            sys.stdout.write("\n")
            sys.stdout.flush()
    return "".join(text)


def _invoke(args: argparse.Namespace) -> int:
    def call(cluster: AgentCluster) -> int:
        if args.session:  # the agent keeps the conversation; /v1/invoke answers whole
            answer = cluster.invoke(args.name, args.question, args.session)
            print(answer.get("output", ""), flush=True)
            return 0
        _write_stream(cluster.chat_stream(args.name, [{"role": "user", "content": args.question}]))
        return 0

    return _cluster_call(args, call)


def _chat(args: argparse.Namespace) -> int:
    """Lines from stdin, answers streamed; the conversation is sent whole each turn (the chat
    completions API keeps nothing), so any replica answers. EOF or /exit ends it."""
    from .cluster import ClusterError

    interactive = sys.stdin.isatty()
    if interactive:
        import readline  # noqa: F401  (line editing and history for input())

    def lines() -> Iterator[str]:
        while True:
            try:
                line = input("> ") if interactive else sys.stdin.readline()
            except EOFError:
                return
            if not interactive and not line:
                return
            yield line.strip()

    def call(cluster: AgentCluster) -> int:
        # A wrong name, cluster or kubeconfig shows before the first question is typed; a user
        # who may talk to the agent but not read AIAgents chats all the same.
        try:
            cluster.agent(args.name)
        except ClusterError as exc:
            if exc.status != 403:
                raise
        if interactive:
            where = f"namespace {cluster.namespace}"
            print(f"{args.name} ({where}); /exit or Ctrl-D to leave.", file=sys.stderr)
        messages: list[dict[str, str]] = []
        failed = False
        for line in lines():
            if line == "/exit":
                break
            if not line:
                continue
            messages.append({"role": "user", "content": line})
            try:
                answer = _write_stream(cluster.chat_stream(args.name, messages))
            except ClusterError as exc:
                messages.pop()  # that turn is not part of the conversation
                print(f"aiagent: {exc}", file=sys.stderr, flush=True)
                failed = True
                continue
            messages.append({"role": "assistant", "content": answer})
        return EXIT_FAILED if failed else 0

    return _cluster_call(args, call)


def _status(args: argparse.Namespace) -> int:
    from .cluster import describe, is_ready

    def call(cluster: AgentCluster) -> int:
        agent = cluster.agent(args.name)
        if args.output == "json":
            print(json.dumps(agent.get("status") or {}, indent=2))
        else:
            print("\n".join(describe(agent)))
        return 0 if is_ready(agent) else EXIT_NOT_READY

    return _cluster_call(args, call)


def _cluster_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("name", help="the AIAgent's name")
    options.add_argument(
        "--kubeconfig", help="kubeconfig file(s) (default: KUBECONFIG, ~/.kube/config)"
    )
    options.add_argument("--context", help="kubeconfig context (default: the current one)")
    options.add_argument(
        "-n", "--namespace", help="the agent's namespace (default: the context's, else default)"
    )
    options.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds to wait for the API server or for the next piece of an answer (300)",
    )
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiagent",
        description="Serve an agent described by agent.yaml; talk to agents in a cluster.",
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

    cluster = [_cluster_options()]
    invoke = commands.add_parser(
        "invoke",
        parents=cluster,
        help="ask an agent in the cluster one question; the answer streams to stdout",
        description="Asks the agent through the API server's Service proxy, with your "
        "kubeconfig (needs `create services/proxy` in its namespace).",
    )
    invoke.add_argument("question")
    invoke.add_argument(
        "--session",
        metavar="ID",
        help="continue (or start) the conversation the agent keeps under ID; "
        "the answer then comes whole, not streamed",
    )
    invoke.set_defaults(func=_invoke)
    chat = commands.add_parser(
        "chat",
        parents=cluster,
        help="talk with an agent in the cluster: a line of stdin per turn; EOF or /exit ends",
        description="Each line of stdin is a turn; answers stream. Exits 1 if a turn failed.",
    )
    chat.set_defaults(func=_chat)
    status = commands.add_parser(
        "status",
        parents=cluster,
        help="phase, replicas, endpoint and conditions of an AIAgent; exit 0 when Ready, "
        f"{EXIT_NOT_READY} when not",
        description=f"Exit status: 0 Ready, {EXIT_NOT_READY} not Ready, 1 error (no such "
        "agent, no permission, API server unreachable).",
    )
    status.add_argument(
        "-o", "--output", choices=["text", "json"], default="text", help="json: the status object"
    )
    status.set_defaults(func=_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except _BadConfig as exc:
        print(f"aiagent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except _Failed as exc:
        print(f"aiagent: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `aiagent invoke ... | head`: the reader has what it wanted
        sys.stderr.close()
        return 0
    return code


def console() -> None:
    """Entry point of the `aiagent` console script."""
    sys.exit(main())


if __name__ == "__main__":
    console()
