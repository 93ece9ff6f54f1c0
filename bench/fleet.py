"""Fleet: several worker processes on one Redis holding tens of thousands of waiting
sessions, then approvals through whichever worker the kernel hands the connection to.

    python -m bench.fleet --target both --sessions 30000 --workers 4 --publish
    python -m bench.fleet --target aura --sessions 600 --workers 2 --clients 2   # a quick look

Per target: a fresh redis-server (Redis's default `maxclients` of 10,000 unless
`--maxclients`), the server with `--workers N` (aura: `aura-trio serve`; the peer:
the same uvicorn app pre-forked N times on one socket), and `--clients` load
processes (`python -m bench.fleet client ...`), each holding its share of the
sessions on its own descriptors (20,000 per process here) and from its own loopback
address (127.0.0.2, ...: one source address has only the ephemeral port range,
~28,000 here, to reach one port with). Each client reads every
stream it holds, so it sees the heartbeats; once all are waiting, the servers'
memory, Redis's connections and an idle window of CPU are read; then each client
approves `--approvals` of its sessions at a steady rate over kept-alive
connections, timing the approve response to the session's next event. A client
stops opening after `--max-errors` failures: the peer holds one Redis connection per
waiting session, so where it breaks is part of the result.

Writes `bench/results/fleet.json`; `--publish` also writes `bench/FLEET.md`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import redis
import trio

from . import harness, machine, procs
from .http import bind_connections_to
from .load import CONNECTION_ERRORS, SECRET, WAITING_PROMPT, Approver, Target, open_until_hitl
from .measure import Errors, percentile

RESULTS = procs.REPO_ROOT / "bench" / "results"
PUBLISHED = procs.REPO_ROOT / "bench" / "FLEET.md"
SESSIONS_PER_CLIENT = 10_000  # under the 20,000 descriptors of a process
OPEN_TIMEOUT_SECONDS = 30.0
APPROVERS = 4
START_SECONDS = 120.0


# --- a load process ---------------------------------------------------------------


def _say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


class _Held:
    """The sessions one client holds, and what it saw on them."""

    def __init__(self, count: int) -> None:
        self.request_ids: list[str | None] = [None] * count
        self.approved_at: list[float | None] = [None] * count
        self.next_event_at: list[float | None] = [None] * count
        self.max_gap = 0.0
        self.heartbeats = 0
        self.ended_early = 0  # ended (or broke) with no event after its `hitl`


async def _hold(
    target: Target, held: _Held, index: int, user: int, opening: trio.Semaphore, errors: Errors
) -> None:
    try:
        async with opening:
            with trio.fail_after(OPEN_TIMEOUT_SECONDS):
                stream, request_id = await open_until_hitl(
                    target, target.stream_request(WAITING_PROMPT, user)
                )
    except (*CONNECTION_ERRORS, trio.TooSlowError) as error:
        errors.note(error)
        return
    held.request_ids[index] = request_id
    last = trio.current_time()
    try:
        while frames := await stream.frames():
            now = trio.current_time()
            if held.next_event_at[index] is None:
                held.max_gap = max(held.max_gap, now - last)
                held.heartbeats += sum(1 for frame in frames if frame == b": heartbeat")
                if any(frame.startswith(b"id:") for frame in frames):
                    # The approval's effect (it may arrive before the approve's response).
                    held.next_event_at[index] = now
            last = now
        if held.next_event_at[index] is None:
            held.ended_early += 1
    except OSError:
        held.ended_early += 1
    finally:
        stream.close()


async def _approve(target: Target, held: _Held, count: int, rate: float, errors: Errors) -> None:
    chosen = [i for i, rid in enumerate(held.request_ids) if rid is not None]
    step = max(1, len(chosen) // max(1, count))
    chosen = chosen[::step][:count]
    pool_send, pool_receive = trio.open_memory_channel[Approver](APPROVERS)
    approvers = [target.approver() for _ in range(APPROVERS)]
    for approver in approvers:
        pool_send.send_nowait(approver)

    async def one(index: int) -> None:
        approver = await pool_receive.receive()
        try:
            request_id = held.request_ids[index]
            assert request_id is not None
            await approver.approve(request_id, index)
            held.approved_at[index] = trio.current_time()
        except CONNECTION_ERRORS as error:
            errors.note(error)
        finally:
            pool_send.send_nowait(approver)

    try:
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for n, index in enumerate(chosen):
                await trio.sleep_until(start + n / rate)
                nursery.start_soon(one, index)
        with trio.move_on_after(10):
            while any(
                held.next_event_at[i] is None and held.approved_at[i] is not None for i in chosen
            ):
                await trio.sleep(0.05)
    finally:
        for approver in approvers:
            approver.close()


async def _client(args: argparse.Namespace) -> None:
    bind_connections_to(args.source)
    target = Target("fleet", harness.HOST, args.port)
    held = _Held(args.count)
    errors = Errors({})
    opening = trio.Semaphore(args.open_concurrency)
    lines = trio.wrap_file(sys.stdin)
    async with trio.open_nursery() as nursery:
        started = trio.current_time()
        opened = 0

        async def report_progress() -> None:
            while True:
                await trio.sleep(2)
                waiting = sum(1 for rid in held.request_ids if rid is not None)
                _say(phase="opening", waiting=waiting, **errors.figures())

        async with trio.open_nursery() as progress:
            progress.start_soon(report_progress)
            for index in range(args.count):
                if errors.figures()["errors"] >= args.max_errors:
                    break
                await opening.acquire()  # the same bound as _hold's: the loop paces itself
                opening.release()
                nursery.start_soon(_hold, target, held, index, args.first + index, opening, errors)
                opened += 1
            while True:
                waiting = sum(1 for rid in held.request_ids if rid is not None)
                if waiting + errors.figures()["errors"] >= opened:
                    break
                await trio.sleep(0.1)
            progress.cancel_scope.cancel()
        _say(
            phase="opened",
            waiting=waiting,
            open_seconds=trio.current_time() - started,
            **errors.figures(),
        )
        await lines.readline()  # "approve"
        approve_errors = Errors({})
        await _approve(target, held, args.approvals, args.rate, approve_errors)
        pairs = list(zip(held.approved_at, held.next_event_at, strict=True))
        latencies = [max(0.0, got - sent) * 1000 for sent, got in pairs if sent and got]
        missing = sum(1 for sent, got in pairs if sent is not None and got is None)
        _say(
            phase="approved",
            latencies_ms=latencies,
            missing=missing,
            max_heartbeat_gap_s=held.max_gap,
            heartbeats=held.heartbeats,
            ended_early=held.ended_early,
            approve_errors=approve_errors.figures(),
        )
        await lines.readline()  # "exit", or EOF
        nursery.cancel_scope.cancel()


# --- the run ----------------------------------------------------------------------


def _server_command(target: str, workers: int) -> list[str]:
    if target == "aura":
        return [sys.executable, "-m", "aura_trio", "serve", "--host", harness.HOST, "--port", "0",
                "--workers", str(workers)]  # fmt: skip
    return [*procs.server_command(target), "--workers", str(workers)]


def _server_usage(pids: list[int]) -> tuple[int, float]:
    """RSS (bytes) and CPU (s) of the server's processes (Redis children excluded)."""
    samples = [procs.sample(pid) for pid in pids]
    return sum(s.rss for s in samples), sum(s.cpu for s in samples)


class _Client:
    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = b""
        self.last: dict[str, Any] = {}

    async def next_message(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                raise RuntimeError("a load process exited")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        self.last = json.loads(line)
        return self.last

    async def send(self, line: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(line.encode() + b"\n")


async def _run_clients(
    args: argparse.Namespace, port: int, server_pids: list[int], redis_client: redis.Redis
) -> dict[str, Any]:
    count = math.ceil(args.sessions / args.clients)
    result: dict[str, Any] = {}
    base_rss, _ = _server_usage(server_pids)
    clients: list[_Client] = []
    try:
        for n in range(args.clients):
            first = n * count
            mine = min(count, args.sessions - first)
            command = [sys.executable, "-m", "bench.fleet", "client", "--port", str(port),
                       "--first", str(first), "--count", str(mine), "--source", f"127.0.0.{n + 2}",
                       "--open-concurrency", str(args.open_concurrency),
                       "--approvals", str(args.approvals // args.clients),
                       "--rate", str(args.rate / args.clients),
                       "--max-errors", str(args.max_errors)]  # fmt: skip
            process = await trio.lowlevel.open_process(
                command, stdin=-1, stdout=-1, cwd=procs.REPO_ROOT,
                env=procs.server_env("", SECRET),
            )  # fmt: skip
            clients.append(_Client(process))
        started = time.monotonic()
        opened: list[dict[str, Any]] = [{} for _ in clients]

        async def until_opened(n: int, client: _Client) -> None:
            while (message := await client.next_message())["phase"] != "opened":
                pass
            opened[n] = message

        async with trio.open_nursery() as nursery:
            for n, client in enumerate(clients):
                nursery.start_soon(until_opened, n, client)

            async def progress() -> None:
                while True:
                    await trio.sleep(5)
                    waiting = sum(c.last.get("waiting", 0) for c in clients)
                    errors = sum(c.last.get("errors", 0) for c in clients)
                    print(f"  waiting {waiting:,}, errors {errors}", file=sys.stderr, flush=True)

            nursery.start_soon(progress)
            while not all(opened):
                await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
        result["open_seconds"] = time.monotonic() - started
        result["waiting"] = sum(o["waiting"] for o in opened)
        result["open_errors"] = sum(o["errors"] for o in opened)
        kinds: dict[str, int] = {}
        for o in opened:
            for kind, k in o["error_kinds"].items():
                kinds[kind] = kinds.get(kind, 0) + k
        result["open_error_kinds"] = kinds
        print(f"  {result['waiting']:,} waiting", file=sys.stderr, flush=True)

        await trio.sleep(args.quiet_seconds)
        rss, cpu_before = _server_usage(server_pids)
        info = await trio.to_thread.run_sync(redis_client.info)
        result["server_rss"] = rss
        result["rss_per_session"] = (rss - base_rss) / max(1, result["waiting"])
        result["redis_clients"] = int(info["connected_clients"]) - 1
        result["redis_used_memory"] = int(info["used_memory"])
        started = time.monotonic()
        await trio.sleep(args.idle_seconds)
        _, cpu_after = _server_usage(server_pids)
        result["idle_cpu_percent"] = 100 * (cpu_after - cpu_before) / (time.monotonic() - started)

        for client in clients:
            await client.send("approve")
        approved = [await client.next_message() for client in clients]
        latencies = [x for a in approved for x in a["latencies_ms"]]
        result["approvals"] = {
            "n": len(latencies),
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
            "max_ms": max(latencies, default=math.nan),
            "missing": sum(a["missing"] for a in approved),
            "errors": sum(a["approve_errors"]["errors"] for a in approved),
        }
        result["max_heartbeat_gap_s"] = max(a["max_heartbeat_gap_s"] for a in approved)
        result["ended_early"] = sum(a["ended_early"] for a in approved)
        for client in clients:
            await client.send("exit")
        with trio.move_on_after(60):
            for client in clients:
                await client.process.wait()
    finally:
        for client in clients:
            if client.process.returncode is None:
                client.process.kill()
    return result


def _measure(args: argparse.Namespace, target: str, work_dir: Path) -> dict[str, Any]:
    run_dir = work_dir / target
    options = ("--maxclients", str(args.maxclients))
    with harness.running_redis(run_dir / "redis", *options) as redis_server:
        env = procs.server_env(redis_server.url, SECRET, {"AURA_MAX_SESSIONS": "100000"})
        with harness.running_server(
            _server_command(target, args.workers),
            env=env,
            log_path=run_dir / "server.log",
            cwd=procs.REPO_ROOT,
            listeners=args.workers,
        ) as server:
            pids = harness.process_tree(server.pid)
            redis_client = redis_server.client(timeout=30)
            redis_client.ping()  # connected before the peer can fill Redis's `maxclients`
            try:
                result = trio.run(_run_clients, args, server.port, pids, redis_client)
            finally:
                redis_client.close()
            result["server_alive"] = server.process.poll() is None
            result["processes"] = len(pids)
    return {"target": target, "workers": args.workers, "sessions": args.sessions, **result}


def _figures(run: dict[str, Any]) -> dict[str, str]:
    """One target's column of the table (a failed run: what failed, in every row)."""
    approvals = run.get("approvals") or {}
    figures = {
        "worker processes": str(run["workers"]),
        "sessions asked": f"{run['sessions']:,}",
        "sessions waiting at once": f"{run.get('waiting', 0):,}",
        "sessions refused or failed to open": f"{run.get('open_errors', 0):,}",
        "commonest open errors": "; ".join(run.get("open_error_kinds", {})) or "none",
        "time to open them": f"{run.get('open_seconds', math.nan):.0f} s",
        "Redis connections": f"{run.get('redis_clients', 0):,}",
        "Redis memory": f"{run.get('redis_used_memory', 0) / 1e6:.1f} MB",
        "server RSS, all processes": f"{run.get('server_rss', 0) / 1e6:.0f} MB",
        "server RSS per waiting session": f"{run.get('rss_per_session', 0) / 1e3:.1f} KB",
        "server CPU while idle": f"{run.get('idle_cpu_percent', math.nan):.1f} % of a core",
        "longest gap between frames a client saw": (
            f"{run.get('max_heartbeat_gap_s', math.nan):.1f} s"
        ),
        "approve -> next event p50 / p99 / max": (
            f"{approvals.get('p50_ms', math.nan):.2f} / {approvals.get('p99_ms', math.nan):.2f}"
            f" / {approvals.get('max_ms', math.nan):.2f} ms (n={approvals.get('n', 0)})"
        ),
        "approvals without a next event / failed": (
            f"{approvals.get('missing', '-')} / {approvals.get('errors', '-')}"
        ),
        "streams that ended early": str(run.get("ended_early", "-")),
    }
    if "failed" in run:
        return {name: f"failed: {run['failed']}" for name in figures}
    return figures


def _markdown(data: dict[str, Any]) -> str:
    m = data["machine"]
    lines = [
        "## Fleet: one machine, several workers, one Redis",
        "",
        f"Produced by `{data['command']}` at commit `{m.get('commit', '?')}`, started "
        f"{data['started']}. Every figure below comes from this one run; "
        "`python -m bench.fleet --help` says how it is measured.",
        "",
        f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores; Redis `maxclients` "
        f"{data['maxclients']}; heartbeat 15 s.",
        "",
        "| figure | " + " | ".join(r["target"] for r in data["runs"]) + " |",
        "|---|" + "---|" * len(data["runs"]),
    ]
    columns = [_figures(run) for run in data["runs"]]
    for name in columns[0]:
        lines.append(f"| {name} | " + " | ".join(column[name] for column in columns) + " |")
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fleet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command")
    client = commands.add_parser("client", help="(internal) one load process")
    client.add_argument("--port", type=int, required=True)
    client.add_argument("--first", type=int, default=0)
    client.add_argument("--count", type=int, required=True)
    client.add_argument("--source", default=harness.HOST, help="the address to connect from")
    client.add_argument("--open-concurrency", type=int, default=100)
    client.add_argument("--approvals", type=int, default=100)
    client.add_argument("--rate", type=float, default=30.0)
    client.add_argument("--max-errors", type=int, default=200)
    parser.add_argument("--target", choices=["aura", "peer", "both"], default="both")
    parser.add_argument("--sessions", type=int, default=30_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--clients", type=int, default=0, help="default: 10,000 sessions each")
    parser.add_argument("--open-concurrency", type=int, default=100, help="per client")
    parser.add_argument("--approvals", type=int, default=600, help="in all")
    parser.add_argument("--rate", type=float, default=100.0, help="approvals/s in all")
    parser.add_argument("--max-errors", type=int, default=200, help="per client")
    parser.add_argument("--maxclients", type=int, default=10_000, help="Redis's (its default)")
    parser.add_argument("--idle-seconds", type=float, default=15.0)
    parser.add_argument("--quiet-seconds", type=float, default=3.0)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--publish", action="store_true", help="also write bench/FLEET.md")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if args.command == "client":
        trio.run(_client, args)
        return 0
    args.clients = args.clients or math.ceil(args.sessions / SESSIONS_PER_CLIENT)
    targets = ["aura", "peer"] if args.target == "both" else [args.target]
    data: dict[str, Any] = {
        "command": "python -m bench.fleet " + " ".join(argv),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine.describe(),
        "maxclients": args.maxclients,
        "runs": [],
    }
    args.results.mkdir(parents=True, exist_ok=True)
    for target in targets:
        print(f"▶ fleet {target}: {args.sessions:,} sessions on {args.workers} workers, "
              f"{args.clients} load processes", file=sys.stderr, flush=True)  # fmt: skip
        try:
            run = _measure(args, target, args.results / "work" / "fleet")
        except (RuntimeError, TimeoutError, OSError) as error:
            run = {"target": target, "workers": args.workers, "sessions": args.sessions,
                   "failed": f"{type(error).__name__}: {str(error)[:200]}"}  # fmt: skip
        print(f"  {json.dumps({k: v for k, v in run.items() if k != 'approvals'})}",
              file=sys.stderr, flush=True)  # fmt: skip
        data["runs"].append(run)
        (args.results / "fleet.json").write_text(json.dumps(data, indent=1))
    text = _markdown(data)
    print(text)
    if args.publish:
        PUBLISHED.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
