"""`tricorn bench`: the command line (flags to a Plan), the printed summary and --json; runner.py runs it."""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import time
from collections.abc import Sequence
from typing import Any

from ..arguments import CommandParser, typed
from ..config import duration
from ..errors import ConfigError, UserError
from ..host.resources import raise_open_files_limit
from . import scenario as scenarios
from . import websocket
from .engine import Load, ResolveError
from .runner import Collector, Plan, run, summarize


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="tricorn bench", description="Load-test any HTTP/1.1 server: closed loop (-c), open loop (--rate) "
        "or users with think time (--users), from a URL or a --scenario file.",
    )
    parser.add_argument("url", nargs="?", help="http://host:port/path (optional with a --scenario that has url)")
    parser.add_argument("-c", "--connections", type=int, default=None,
                        help="closed loop: connections (default 64); open loop: the most to open (default 1024)")
    parser.add_argument("-d", "--duration", type=_duration, default=None, help="how long to measure (default 10s)")
    parser.add_argument("-n", "--requests", type=int, default=0, help="stop after this many requests instead")
    parser.add_argument("--rate", type=float, default=0.0, help="open loop: start this many requests per second")
    parser.add_argument("--users", type=int, default=0, help="simulated users, each with its own connection")
    parser.add_argument("--spawn-rate", type=float, default=0.0, help="users started per second (default: all at once)")
    parser.add_argument("--think", type=_think, default=(0.0, 0.0), metavar="MIN-MAX",
                        help="a user's pause between requests, uniform in MIN-MAX (e.g. 3s-5s)")
    parser.add_argument("--scenario", metavar="FILE", help="TOML file of weighted requests and sequences")
    parser.add_argument("--warmup", type=_duration, default=0.0, help="load without measuring first (e.g. 2s)")
    parser.add_argument("-H", "--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="a request header; repeatable")
    parser.add_argument("-m", "--method", default="GET")
    body = parser.add_mutually_exclusive_group()
    body.add_argument("--body", default="", help="request body")
    body.add_argument("--body-file", metavar="FILE", help="request body from a file")
    parser.add_argument("--timeout", type=_duration, default=10.0, help="a request unanswered this long is an error")
    parser.add_argument("--no-keepalive", dest="keepalive", action="store_false",
                        help="a new connection per request")
    parser.add_argument("--message-size", type=int, default=32, metavar="BYTES",
                        help="ws:// and wss://: each message's size; the server is to echo it (default 32)")
    parser.add_argument("--cacert", metavar="FILE", help="https:// and wss://: trust the CA certificates in this "
                        "PEM file (default: the system's)")
    parser.add_argument("-k", "--insecure", action="store_true",
                        help="https:// and wss://: do not check the server's certificate")
    parser.add_argument("--procs", type=int, default=1, help="processes generating load (one core each)")
    parser.add_argument("--json", metavar="FILE", help="write every result, with the per-second series, as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no live line")
    return parser


_duration = typed(duration)


def _think(text: str) -> tuple[float, float]:
    low, sep, high = text.partition("-")
    try:
        pair = (duration(low), duration(high if sep else low))
    except ValueError:
        raise argparse.ArgumentTypeError("expected MIN-MAX durations, like 3s-5s") from None
    if pair[0] > pair[1]:
        raise argparse.ArgumentTypeError("MIN is above MAX")
    return pair


def plan(args: argparse.Namespace) -> Plan:
    headers: dict[str, str] = {}
    for header in args.header:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise ConfigError(f"-H {header!r}: expected 'Name: value'")
        headers[name.strip()] = value.strip()
    if args.body_file:
        try:
            with open(args.body_file, "rb") as f:
                body: bytes = f.read()
        except OSError as exc:
            raise ConfigError(f"cannot read --body-file {args.body_file}: {exc.strerror}") from None
    else:
        body = args.body.encode()
    if args.message_size < 0:
        raise ConfigError("--message-size cannot be negative")
    if args.scenario:
        target, scenario = scenarios.load(args.scenario, args.url, headers, args.keepalive)
        if target.websocket:
            raise ConfigError("--scenario is for http(s):// URLs; a ws:// load takes --message-size")
    elif args.url:
        target = scenarios.Target.parse(args.url)
        scenario = scenarios.single(target, args.method, headers, body, args.keepalive)
        if target.websocket:
            if headers or body or args.method != "GET" or not args.keepalive:
                raise ConfigError("-H, -m, --body and --no-keepalive are for http(s):// URLs; a ws:// load "
                                  "sends --message-size bytes and waits for the echo")
            scenario = websocket.scenario(args.message_size)
    else:
        raise ConfigError("give a URL to load, like tricorn bench http://127.0.0.1:8000/, or --scenario FILE")
    if args.rate and args.users:
        raise ConfigError("--rate (open loop) and --users (user model) are different models: choose one")
    for flag, value in (("-c", args.connections), ("--procs", args.procs), ("--users", args.users or None)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be at least 1")
    if args.requests < 0 or args.rate < 0 or args.spawn_rate < 0:
        raise ConfigError("-n, --rate and --spawn-rate cannot be negative")
    if args.requests and args.duration is not None:
        raise ConfigError("-d and -n both say when to stop: give one")
    mode = "open" if args.rate else "users" if args.users else "closed"
    if mode != "users" and (args.spawn_rate or args.think != (0.0, 0.0)):
        raise ConfigError("--spawn-rate and --think apply to --users")
    connections = args.connections or (1024 if mode == "open" else 64)
    if mode == "closed" and args.requests and args.requests < connections:
        connections = args.requests
    procs = max(1, min(args.procs, connections if mode == "closed" else args.users if mode == "users" else args.procs))
    load = Load(
        mode, connections=connections, rate=args.rate, users=args.users, spawn_rate=args.spawn_rate,
        think=args.think, duration=10.0 if args.duration is None else args.duration, requests=args.requests,
        warmup=args.warmup, timeout=args.timeout, keepalive=args.keepalive,
    )
    if not load.requests and load.duration <= 0:
        raise ConfigError("-d must be above 0")
    return Plan(target, scenario, load, procs, tls=tls_context(target, args.cacert, args.insecure))


def tls_context(target: scenarios.Target, cacert: str | None, insecure: bool) -> ssl.SSLContext | None:
    """Whom an https:// or wss:// target must prove it is: the system's CAs, --cacert's, or (-k) anyone."""
    if not target.secure:
        if cacert or insecure:
            raise ConfigError("--cacert and --insecure are for https:// and wss:// URLs")
        return None
    try:
        context = ssl.create_default_context(cafile=cacert)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load --cacert {cacert}: {getattr(exc, 'strerror', None) or exc}") from None
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


def render(summary: dict[str, Any]) -> str:
    load = summary["load"]
    model = {"closed": f"closed loop, {load['connections']} connections",
             "open": f"open loop, {load['rate']:,g} req/s (at most {load['connections']} connections)",
             "users": f"{load['users']} users, think {load['think'][0]:g}-{load['think'][1]:g}s"}[load["mode"]]
    latency = summary["latency_ms"]
    errors = ", ".join(f"{k} {v:,}" for k, v in summary["errors"].items()) or "none"
    status = ", ".join(f"{k}: {v:,}" for k, v in summary["status"].items()) or "none"
    lines = [
        f"tricorn bench {summary['url']}: {model}, {load['procs']} process(es)",
        f"  requests    {summary['requests']:,} = {summary['answered']:,} answered + {summary['error_count']:,} errors"
        f" in {summary['elapsed_s']:.2f}s",
        f"  throughput  {summary['throughput_rps']:,.1f} req/s, "
        f"{summary['bytes'] / max(summary['elapsed_s'], 1e-9) / 1e6:,.2f} MB/s in",
        f"  latency ms  mean {latency['mean']:.3f}  p50 {latency['p50']:.3f}  p90 {latency['p90']:.3f}  "
        f"p99 {latency['p99']:.3f}  p99.9 {latency['p99.9']:.3f}  max {latency['max']:.3f}",
        f"  status      {status}",
        f"  errors      {errors}",
    ]
    if len(summary["by_request"]) > 1:
        lines.append("  by request  " + ", ".join(f"{k} {v:,}" for k, v in summary["by_request"].items()))
    if "websocket" in summary:
        ws = summary["websocket"]
        codes = ", ".join(f"{k}: {v:,}" for k, v in ws["close_codes"].items()) or "none"
        lines.append(f"  websocket   {summary['throughput_rps']:,.1f} round trips/s, {ws['messages_per_s']:,.1f} "
                     f"messages/s (each round trip under 101 above); server closes: {codes}")
    if "pages" in summary:
        pages, assets = summary["pages"], summary["assets"]
        page_latency = pages["latency_ms"]
        asset_status = ", ".join(f"{k}: {v:,}" for k, v in assets["status"].items()) or "none"
        asset_errors = ", ".join(f"{k} {v:,}" for k, v in assets["errors"].items()) or "none"
        lines += [
            f"  pages       {pages['visits']:,} with their assets, {pages['rate']:,.1f}/s; until the last asset, ms: "
            f"p50 {page_latency['p50']:.3f}  p99 {page_latency['p99']:.3f}  max {page_latency['max']:.3f}",
            f"  assets      {assets['answered']:,} answered ({asset_status}), {assets['bytes']:,} bytes; "
            f"errors {asset_errors}",
        ]
    lines.extend(f"  warning: {w}" for w in summary["warnings"])
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    try:
        the_plan = plan(args)
        raise_open_files_limit()  # a socket per connection
        collector = Collector(the_plan.procs, None if args.quiet else sys.stderr)
        started = time.monotonic()
        run(the_plan, collector)
        if not args.quiet and sys.stderr.isatty():
            sys.stderr.write("\n")
        summary = summarize(the_plan, collector)
        summary["wall_s"] = round(time.monotonic() - started, 3)
    except ResolveError as exc:
        print(f"Error: {exc}; check the URL", file=sys.stderr)
        return 1
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    print(render(summary))
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(summary, f, indent=1)
        except OSError as exc:
            print(f"Error: cannot write --json {args.json}: {exc.strerror}", file=sys.stderr)
            return 1
    return 0

