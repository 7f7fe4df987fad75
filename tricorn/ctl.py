"""`tricorn ctl COMMAND`: talk to a running master over its control socket (master/control.py).

The socket is --control-socket, else the one beside --pid (as the server derives it), read from
the same flags, environment and config file as the server's. `status` exits 1 while fewer workers
are ready than the master wants, so it doubles as a liveness or readiness probe.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import Sequence
from typing import Any

from .config import load
from .errors import UserError

COMMANDS = ("status", "workers", "add", "remove", "reload", "stacks", "stop")
TIMEOUT = 10.0  # seconds: `stacks` may wait on each worker


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tricorn ctl", description="Ask a running tricorn master: status, workers N, add, remove, reload, "
        "stacks [WORKER], stop [--graceful].")
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("number", nargs="?", type=int, help="workers: how many; stacks: which worker (default all)")
    parser.add_argument("--control-socket", metavar="PATH", help="the master's control socket")
    parser.add_argument("-p", "--pid", metavar="FILE", help="the master's pid file: the socket is beside it")
    parser.add_argument("-c", "--config", metavar="FILE", help="the server's config file, to find the socket")
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")
    parser.add_argument("--graceful", action="store_true", help="stop: let requests in progress finish")
    return parser


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        given = {key: getattr(args, key) for key in ("control_socket", "pid", "config") if getattr(args, key)}
        path = load(given)[0].control_path()
        if not path:
            raise UserError("no control socket: give --control-socket PATH, or --pid FILE of a server started "
                            "with --pid")
        request: dict[str, Any] = {"command": args.command}
        if args.command == "workers":
            if args.number is None:
                raise UserError("tricorn ctl workers N: how many workers")
            request["count"] = args.number
        elif args.command == "stacks" and args.number is not None:
            request["worker"] = args.number
        elif args.command == "stop":
            request["graceful"] = args.graceful
        reply = ask(path, request)
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(json.dumps(reply, indent=2))
    if not reply.get("ok"):
        if not args.json:
            print(f"Error: {reply.get('error')}", file=sys.stderr)
        return 1
    if args.command == "status":
        status = reply["status"]
        if not args.json:
            print(_status_text(status))
        ready = sum(1 for worker in status["workers"] if worker["state"] in ("ready", "retiring"))
        return 0 if ready >= status["target"] else 1
    if not args.json:
        if args.command == "stacks":
            for number, text in reply["stacks"].items():
                print(f"--- worker {number} ---\n{text}")
        elif "workers" in reply:
            print(f"{reply['workers']} workers")
    return 0


def ask(path: str, request: dict[str, Any]) -> dict[str, Any]:
    """One request to the master at `path`, its answer; UserError when nobody answers."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.connect(path)
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except FileNotFoundError:
        raise UserError(f"no control socket at {path}: is the server running (with a master, -w 2 or more, "
                        "or --control-socket)?") from None
    except ConnectionRefusedError:
        raise UserError(f"nothing answers at {path}: the server is not running (a stale socket file)") from None
    except PermissionError:
        raise UserError(f"cannot use {path}: only the server's user may; run as that user") from None
    except OSError as exc:
        raise UserError(f"cannot talk to {path}: {exc.strerror or exc}") from None
    try:
        reply: dict[str, Any] = json.loads(data)
    except ValueError:
        raise UserError(f"the master at {path} closed without an answer; its log says why") from None
    return reply


def _status_text(status: dict[str, Any]) -> str:
    lines = [f"master {status['master']} serving {status['app']}: {status['target']} workers wanted, "
             f"generation {status['generation']}",
             f"{'worker':>6} {'pid':>8} {'state':<9} {'age s':>8} {'requests':>9} {'in flight':>9} "
             f"{'RSS MiB':>8} {'beat s':>7}"]
    for w in status["workers"]:
        lines.append(f"{w['worker']:>6} {w['pid']:>8} {w['state']:<9} {w['age']:>8.1f} {w['requests']:>9} "
                     f"{w['in_flight']:>9} {w['rss'] / 2**20:>8.1f} {w['heartbeat_age']:>7.2f}")
    return "\n".join(lines)
