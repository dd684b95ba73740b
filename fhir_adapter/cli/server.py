"""`fhir-adapter server start|stop|status`: the local test FHIR server (sekmet-fhir on 127.0.0.1).

`start` prints the base URL on stdout (so `URL=$(fhir-adapter server start)` works) once `/metadata`
answers; the server keeps running in the background until `stop`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import server
from . import UsageError

DEFAULT_PORT = 8090


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("server", help="start or stop the local test FHIR server (sekmet on 127.0.0.1)",
                            description="The local test FHIR server: sekmet-fhir on 127.0.0.1 with safe settings "
                                        "(loopback only, simulator off, no traffic log).")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = actions.add_parser(
        "start", help="start it in the background and print its base URL",
        description="Start the local FHIR server in the background (in memory unless --data) and print its base "
                    "URL once it answers; if it is already running, print that one's. A port already in use is "
                    "refused (exit 2).")
    start.add_argument("--port", type=int, default=DEFAULT_PORT, metavar="P",
                       help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")
    start.add_argument("--data", type=Path, metavar="FILE",
                       help="SQLite file keeping the store between runs (default: in memory, gone at stop)")
    start.add_argument("--timeout", type=float, default=60.0, metavar="S",
                       help="seconds to wait for it to answer (default 60)")
    actions.add_parser("stop", help="stop the server started by `server start`",
                       description="Stop the local FHIR server started by `fhir-adapter server start`.")
    actions.add_parser("status", help="print the base URL of the running server (exit 1 if none)",
                       description="Print the base URL of the server started by `fhir-adapter server start`; "
                                   "exit 1 if none is running.")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "start":
        if not 0 < args.port < 65536:
            raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
        try:
            state = server.start_detached(args.port, args.data, args.timeout)
        except server.PortInUseError as exc:
            raise UsageError(f"{exc} (choose another --port, or stop what listens there)") from None
        if state.get("already_running"):
            print(f"already running (pid {state['pid']})", file=sys.stderr)
        else:
            store = state["data"] or "in memory (gone at stop)"
            print(f"local FHIR server (sekmet) running, pid {state['pid']}; store: {store}; log: {state['log']}; "
                  f"stop it with: fhir-adapter server stop", file=sys.stderr)
        print(state["base_url"])
        return 0
    if args.action == "stop":
        state = server.stop_detached()
        if state is None:
            print("no local FHIR server is running", file=sys.stderr)
            return 0
        print(f"stopped the local FHIR server at {state['base_url']} (pid {state['pid']})", file=sys.stderr)
        return 0
    state = server.detached()
    if state is None:
        print("no local FHIR server is running", file=sys.stderr)
        return 1
    print(state["base_url"])
    return 0
