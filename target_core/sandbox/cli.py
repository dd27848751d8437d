"""``target-sandbox``: serve the emulators, show what they hold, or reset them.

    target-sandbox serve --data-dir .sandbox [--port 0] [--rate-limit-per-minute 10]
                         [--max-body-bytes N] [--fault '{"path": "...", "status": 503}']
    target-sandbox show  --data-dir .sandbox [--max-rows 20] [--dataset CODE ...]
    target-sandbox reset --data-dir .sandbox

``show`` and ``reset`` work on the files directly, so they need no running server. ``show``
prints 20 rows per dataset unless told otherwise (``--max-rows``; a big load printed whole
runs to hundreds of MB). ``reset`` refuses while a server is running on the data dir (it
would wipe the files under it): stop the server, or use ``POST /_sandbox/reset`` on it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import orjson

from target_core.sandbox.faults import FaultRule
from target_core.sandbox.limits import DEFAULT_MAX_BODY_BYTES
from target_core.sandbox.registry import EmulatorRegistry
from target_core.sandbox.requestlog import RequestLog
from target_core.sandbox.server import SandboxServer, running_server


def _fault(text: str) -> FaultRule:
    try:
        return FaultRule.from_json(orjson.loads(text))
    except orjson.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="target-sandbox", description="Loopback emulators of the analytics platforms' APIs."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve every emulator until SIGTERM/SIGINT")
    serve.add_argument("--data-dir", type=Path, required=True)
    serve.add_argument("--host", default="127.0.0.1", help="loopback address only")
    serve.add_argument("--port", type=_non_negative, default=0, help="0 = any free port")
    serve.add_argument("--rate-limit-per-minute", type=_non_negative, default=0)
    serve.add_argument("--max-body-bytes", type=_non_negative, default=DEFAULT_MAX_BODY_BYTES)
    serve.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="JSON",
        help='fault rule, e.g. \'{"path": "/graphitenote/api/dataset-fill", "status": 503}\'',
    )

    show = commands.add_parser("show", help="print every emulator's state as JSON")
    show.add_argument("--data-dir", type=Path, required=True)
    show.add_argument("--max-rows", type=_non_negative, default=20,
                      help="rows printed per dataset (default 20)")
    show.add_argument("--dataset", action="append", default=[], metavar="CODE",
                      help="only this dataset, database or lake directory, on every "
                           "platform (repeat for several)")

    reset = commands.add_parser("reset", help="wipe every emulator's data and the request log")
    reset.add_argument("--data-dir", type=Path, required=True)
    return parser


def _serve(args: argparse.Namespace) -> int:
    try:
        server = SandboxServer(
            args.data_dir,
            host=args.host,
            port=args.port,
            rate_limit_per_minute=args.rate_limit_per_minute,
            max_body_bytes=args.max_body_bytes,
            faults=args.fault,
        )
    except (ValueError, OSError) as exc:
        print(f"target-sandbox: {exc}", file=sys.stderr)
        return 2
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    server.start()
    print(f"sandbox listening on {server.url}", flush=True)
    while not stopping.wait(0.5):
        pass
    server.stop()
    return 0


def _require_dir(data_dir: Path) -> bool:
    if data_dir.is_dir():
        return True
    print(f"target-sandbox: data dir {data_dir} does not exist", file=sys.stderr)
    return False


def _show(args: argparse.Namespace) -> int:
    if not _require_dir(args.data_dir):
        return 1
    snapshot = EmulatorRegistry(args.data_dir).snapshot(args.max_rows)
    if args.dataset:
        for state in snapshot.values():
            _keep_only(state, args.dataset)
    sys.stdout.buffer.write(orjson.dumps(snapshot, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()
    return 0


_NAMED_PLACES = ("datasets", "databases", "directories")
"""Where emulators keep what a target loads, by name (Graphite Note and uSmart datasets,
DataInsider and DataTile databases, DataInsider lake directories)."""


def _keep_only(state: object, names: list[str]) -> None:
    """`--dataset`: only the named datasets, databases and lake directories, on every platform."""
    if not isinstance(state, dict):
        return
    for key, value in state.items():
        if key in _NAMED_PLACES and isinstance(value, dict):
            state[key] = {k: v for k, v in value.items() if k in names}
        elif isinstance(value, dict):
            _keep_only(value, names)


def _reset(args: argparse.Namespace) -> int:
    if not _require_dir(args.data_dir):
        return 1
    if url := running_server(args.data_dir):
        print(f"target-sandbox: a server is running on {args.data_dir} ({url}): stop it "
              f"first, or reset it live with POST {url}/_sandbox/reset", file=sys.stderr)
        return 1
    registry = EmulatorRegistry(args.data_dir)
    registry.reset()
    RequestLog(args.data_dir).clear()
    print(f"reset {', '.join(registry.emulators) or 'nothing'} in {args.data_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = {"serve": _serve, "show": _show, "reset": _reset}[args.command]
    return command(args)


if __name__ == "__main__":
    sys.exit(main())
