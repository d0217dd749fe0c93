"""The fan-out benchmark: setup, the rate steps, the report. Run as `python -m bench.fanout`."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import uvloop

from bench.fanout import procs
from bench.fanout.publisher import Publisher, PublishResult
from bench.fanout.receiver import Stats, Subscriber, connect

DEFAULT_RATES = "5,10,20,40,80,160,320,640,1280"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("-n", "--subscribers", type=int, default=1000, help="subscriber WebSockets (N)")
    p.add_argument("-p", "--processes", type=int, default=2, help="server processes (P)")
    p.add_argument("--gunicorn", action="store_true",
                   help="one gunicorn master with P workers instead of P `rustchat serve` processes")
    p.add_argument("--users", type=int, default=10,
                   help="users the subscribers log in as (each user creation costs an Argon2 hash)")
    p.add_argument("--rates", default=DEFAULT_RATES, help="offered posts/s, stepped up until saturation")
    p.add_argument("--step-secs", type=float, default=10.0, help="length of each step's sending window")
    p.add_argument("--grace-secs", type=float, default=10.0,
                   help="after a step, wait at most this long for its deliveries (then they count as lost)")
    p.add_argument("--settle-secs", type=float, default=2.0, help="pause between steps")
    p.add_argument("--refine", type=int, default=2,
                   help="after the first saturated step, this many steps between it and the last sustained one")
    p.add_argument("--no-80", dest="eighty", action="store_false",
                   help="skip the final step at 80%% of the highest sustained rate")
    p.add_argument("--max-p99-ms", type=float, default=500.0, help="a p99 above this counts as saturated")
    p.add_argument("--max-server-cpu", type=float, default=0.95,
                   help="server CPU above this share of the server cores counts as saturated (no headroom)")
    p.add_argument("--min-received", type=float, default=0.95,
                   help="received/offered deliveries in the window below this counts as saturated")
    p.add_argument("--message-bytes", type=int, default=64, help="length of each post's message")
    p.add_argument("--max-inflight", type=int, default=64, help="outstanding POSTs at most")
    p.add_argument("--send-queue", type=int, default=100_000, help="RUSTCHAT_WS__SEND_QUEUE for the servers")
    p.add_argument("--server-cpus", default="0", help="taskset CPU list for the servers and Redis")
    p.add_argument("--client-cpus", default="1", help="CPU list for this load generator")
    p.add_argument("--pg-url", default=os.environ.get("RUSTCHAT_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
                   help="PostgreSQL where the benchmark may create (and drops) its own database")
    p.add_argument("--quiet-wait", type=float, default=0.0,
                   help="before each step, wait up to this many seconds for other people's load on the "
                        "machine to fall below --quiet-cores (0: do not wait, just report it)")
    p.add_argument("--quiet-cores", type=float, default=0.15, help="see --quiet-wait")
    p.add_argument("--retry-noisy", type=int, default=2,
                   help="with --quiet-wait, measure a step again (at most this often) when other load exceeded "
                        "--quiet-cores during it")
    p.add_argument("--max-minutes", type=float, default=15.0, help="hard limit for the whole run")
    p.add_argument("--json", type=Path, help="also write the results here (default: in the log dir)")
    p.add_argument("--profile", action="store_true",
                   help="finally run one more step with py-spy sampling every server process")
    p.add_argument("--profile-rate", type=float, help="posts/s of the profiled step (default: the 80%% rate)")
    p.add_argument("--py-spy", default=shutil.which("py-spy"), help="the py-spy binary for --profile")
    return p.parse_args(argv)


# -- measurements ---------------------------------------------------------------------------------
@dataclass
class CpuSample:
    wall: float
    server: dict[int, float]
    server_sys: float
    redis: float
    pg: dict[int, float]
    client: float
    client_sys: float
    machine: float  # every core's busy time, ours and everybody else's

    @staticmethod
    def take(servers: procs.Servers, redis: procs.Started, db: procs.Database) -> CpuSample:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        times = {pid: procs.proc_times(pid) for pid in servers.pids()}
        return CpuSample(
            wall=time.monotonic(),
            server={pid: u + s for pid, (u, s) in times.items()},
            server_sys=sum(s for _, s in times.values()),
            redis=procs.proc_cpu(redis.pid),
            pg={pid: procs.proc_cpu(pid) for pid in db.backend_pids()},
            client=usage.ru_utime + usage.ru_stime,
            client_sys=usage.ru_stime,
            machine=procs.cores_busy(),
        )


def _delta(after: dict[int, float], before: dict[int, float]) -> float:
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


def _foreign(before: CpuSample, after: CpuSample) -> float:
    """CPU-seconds the machine spent between the samples on anything but this benchmark."""
    ours = (after.client - before.client) + _delta(after.server, before.server) + (after.redis - before.redis) \
        + _delta(after.pg, before.pg)
    return (after.machine - before.machine) - ours


@dataclass
class StepResult:
    label: str
    rate: float  # offered posts/s
    subscribers: int
    window_secs: float
    sent: int
    ok: int
    errors: dict[str, int]
    sent_rate: float
    received_window: int  # deliveries received within the sending window
    received: int  # deliveries received by the end of the grace period
    late: int
    other: int
    reads: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    post_p50_ms: float | None
    post_p99_ms: float | None
    wall_secs: float  # CPU accounting window: from the first post to the last delivery (or grace)
    server_cpu: float
    server_cpu_by_pid: dict[int, float]
    server_sys_cpu: float  # of server_cpu, the part spent in the kernel (mostly send() on the sockets)
    redis_cpu: float
    pg_cpu: float
    client_cpu: float
    client_sys_cpu: float
    foreign_cpu: float  # CPU the machine spent on anything but this benchmark (other people's work)
    closes: dict[int, int] = field(default_factory=dict)
    saturated: bool = False
    why: list[str] = field(default_factory=list)  # why it counts as saturated
    notes: list[str] = field(default_factory=list)  # what else is wrong with it

    @property
    def offered_dps(self) -> float:
        return self.rate * self.subscribers

    @property
    def received_dps(self) -> float:
        return self.received_window / self.window_secs

    @property
    def expected(self) -> int:
        return self.ok * self.subscribers

    @property
    def loss(self) -> int:
        return self.expected - self.received

    @property
    def deliveries_per_cpu_sec(self) -> float | None:
        return self.received / self.server_cpu if self.server_cpu > 0 else None

    @property
    def us_per_delivery(self) -> float | None:
        return self.server_cpu / self.received * 1e6 if self.received else None

    def summary(self) -> dict:
        out = asdict(self)
        out.update(offered_dps=self.offered_dps, received_dps=self.received_dps, expected=self.expected,
                   loss=self.loss, deliveries_per_cpu_sec=self.deliveries_per_cpu_sec,
                   us_per_delivery=self.us_per_delivery)
        return out


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


# -- the run --------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace, servers: procs.Servers, redis: procs.Started,
                 db: procs.Database) -> None:
        self.args = args
        self.servers = servers
        self.redis = redis
        self.db = db
        self.stats = Stats()
        self.subs: list[Subscriber] = []
        self.nodes: Counter[str] = Counter()
        self.results: list[StepResult] = []
        self.step_no = 0

    def log(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    async def call(self, method: str, url: str, token: str | None, body: object = None) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(method, url, json=body, headers=headers) as resp:
            data = await resp.json(content_type=None)
            if resp.status >= 300:
                raise RuntimeError(f"{method} {url}: {resp.status} {data}")
            return data

    async def setup(self) -> None:
        a = self.args
        base = self.servers.urls[0]
        v1 = base + "/api/v1"
        admin = (await self.call("POST", v1 + "/auth/login", None,
                                 {"login_id": procs.ADMIN_USER, "password": procs.ADMIN_PASSWORD}))["token"]
        self.admin_token = admin
        per_user = math.ceil(a.subscribers / a.users)
        if per_user > 10000:
            raise SystemExit(f"{a.subscribers} subscribers need at least {math.ceil(a.subscribers / 10000)} users "
                             "(the connection limit is at most 10000 per user)")
        await self.call("PUT", v1 + "/admin/config/site", admin, {"max_simultaneous_connections": max(5, per_user)})
        config_set = time.monotonic()
        team = await self.call("POST", v1 + "/teams", admin, {"name": "bench" + secrets.token_hex(4), "display_name": "Bench"})
        channel = await self.call("POST", v1 + "/channels", admin, {
            "team_id": team["id"], "name": "fanout", "display_name": "Fan-out", "type": "public"})
        self.channel_id = channel["id"]
        password = "bench-password-" + secrets.token_hex(4)
        limit = asyncio.Semaphore(4)

        async def user(i: int) -> str:
            async with limit:
                name = f"bench{i}x{secrets.token_hex(3)}"
                urls = self.servers.urls
                u = await self.call("POST", urls[i % len(urls)] + "/api/v1/users", admin,
                                    {"username": name, "email": f"{name}@example.com", "password": password})
                await self.call("POST", f"{v1}/teams/{team['id']}/members", admin, {"user_id": u["id"]})
                await self.call("POST", f"{v1}/channels/{self.channel_id}/members", admin, {"user_id": u["id"]})
                login = await self.call("POST", urls[i % len(urls)] + "/api/v1/auth/login", None,
                                        {"login_id": name, "password": password})
                return login["token"]

        self.log(f"creating {a.users} users, a team and a channel ...")
        self.tokens = await asyncio.gather(*(user(i) for i in range(a.users)))
        # Every process picks the raised connection limit up within 3 s.
        await asyncio.sleep(max(0.0, config_set + 3.5 - time.monotonic()))
        await self.connect_all()
        await self.warm_up()

    async def connect_all(self) -> None:
        a = self.args
        ports = self.servers.ports
        self.log(f"opening {a.subscribers} WebSockets ...")
        limit = asyncio.Semaphore(50)

        async def one(i: int) -> None:
            async with limit:
                port = ports[i % len(ports)]
                sub, hello = await connect(self.stats, "127.0.0.1", port, self.tokens[i % len(self.tokens)])
                self.subs.append(sub)
                self.nodes[hello["node_id"]] += 1

        started = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(a.subscribers)))
        self.log(f"  {len(self.subs)} open in {time.monotonic() - started:.1f} s; per node: "
                 + ", ".join(f"{n}={c}" for n, c in sorted(self.nodes.items())))
        if len(self.nodes) != a.processes:
            raise RuntimeError(f"subscribers reached {len(self.nodes)} server processes, expected {a.processes}")

    async def warm_up(self) -> None:
        """One post at a time until every subscriber gets it: the cluster link is up everywhere."""
        pub = self.publisher()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            self.stats.reset(int(time.time() * 1000))
            res = PublishResult()
            for _ in range(len(self.servers.urls)):  # one through each server
                await pub.post_one(0, 0, res)
            want = res.ok * self.args.subscribers
            await self.received(want, asyncio.get_running_loop().time() + 5)
            if res.ok and self.stats.count == want:
                self.log(f"warm-up: {res.ok} posts reached all {self.args.subscribers} subscribers")
                return
        raise RuntimeError(f"warm-up: posts did not reach every subscriber ({self.stats.count} deliveries)")

    async def received(self, count: int, until: float) -> None:
        """Until `count` deliveries of this step arrived or the loop's clock passes `until`."""
        loop = asyncio.get_running_loop()
        # Polled: a counter check per delivery and an Event would cost more than 50 wake-ups/s.
        while self.stats.count < count and loop.time() < until:  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    async def drained(self, limit: float = 120.0) -> None:
        """Until no more posted events arrive (a saturated step's backlog would load the next one)."""
        deadline = time.monotonic() + limit
        last = -1
        while time.monotonic() < deadline:
            now = self.stats.count + self.stats.late
            if now == last:
                return
            last = now
            await asyncio.sleep(0.5)
        self.log("warning: deliveries still arriving after the previous step")

    async def quiet(self) -> None:
        """Wait (up to --quiet-wait) until the rest of the machine is nearly idle."""
        a = self.args
        deadline = time.monotonic() + a.quiet_wait
        waited = False
        while a.quiet_wait > 0:
            before = CpuSample.take(self.servers, self.redis, self.db)
            await asyncio.sleep(1.0)
            after = CpuSample.take(self.servers, self.redis, self.db)
            foreign = _foreign(before, after) / (after.wall - before.wall)
            if foreign <= a.quiet_cores:
                if waited:
                    self.log(f"  machine quiet again (other load {foreign:.2f} cores)")
                return
            if time.monotonic() > deadline:
                self.log(f"  machine still busy after {a.quiet_wait:.0f} s (other load {foreign:.2f} cores); measuring anyway")
                return
            if not waited:
                self.log(f"  other load {foreign:.2f} cores: waiting for a quiet machine ...")
                waited = True

    def publisher(self) -> Publisher:
        return Publisher(self.http, self.servers.urls, self.channel_id, self.admin_token,
                         message_bytes=self.args.message_bytes, max_inflight=self.args.max_inflight)

    async def step(self, rate: float, label: str, profile: bool = False) -> StepResult:
        a = self.args
        n = a.subscribers
        self.servers.check_alive()
        self.step_no += 1
        await self.drained()
        await asyncio.sleep(a.settle_secs)
        await self.quiet()
        loop = asyncio.get_running_loop()
        pub = self.publisher()
        spies = self.start_profilers(a.step_secs) if profile else []
        self.stats.reset(int(time.time() * 1000))
        before = CpuSample.take(self.servers, self.redis, self.db)
        t0 = loop.time()
        window: list[int] = []
        loop.call_at(t0 + a.step_secs, lambda: window.append(self.stats.count))
        res = await pub.run(self.step_no, rate, a.step_secs)
        expected = res.ok * n
        # The grace period runs from the end of the sending window, not from the last response.
        until = max(loop.time(), t0 + a.step_secs) + a.grace_secs
        await self.received(expected, until)
        if not window:
            await asyncio.sleep(max(0.0, t0 + a.step_secs - loop.time()) + 0.01)
        after = CpuSample.take(self.servers, self.redis, self.db)
        s = self.stats
        r = StepResult(
            label=label, rate=rate, subscribers=n, window_secs=a.step_secs, sent=res.sent, ok=res.ok,
            errors=dict(res.errors), sent_rate=res.sent / max(a.step_secs, res.send_secs + 1 / rate),
            received_window=window[0], received=s.count, late=s.late, other=s.other, reads=s.reads,
            p50_ms=s.percentile(0.50), p99_ms=s.percentile(0.99), max_ms=s.max_ms(),
            post_p50_ms=_pct(res.response_ms, 0.50), post_p99_ms=_pct(res.response_ms, 0.99),
            wall_secs=after.wall - before.wall,
            server_cpu=_delta(after.server, before.server),
            server_cpu_by_pid={pid: after.server[pid] - before.server.get(pid, 0.0) for pid in after.server},
            server_sys_cpu=after.server_sys - before.server_sys,
            redis_cpu=after.redis - before.redis, pg_cpu=_delta(after.pg, before.pg),
            client_cpu=after.client - before.client, client_sys_cpu=after.client_sys - before.client_sys,
            closes=dict(s.closes),
            foreign_cpu=_foreign(before, after),
        )
        if r.received_dps < a.min_received * r.offered_dps:
            r.why.append(f"received {r.received_dps:,.0f}/s < {a.min_received:.0%} of offered")
        if r.loss > 0:
            r.why.append(f"lost {r.loss}")
        if r.errors:
            r.why.append(f"POST errors {r.errors}")
        if r.p99_ms is not None and r.p99_ms > a.max_p99_ms:
            r.why.append(f"p99 {r.p99_ms:.0f} ms > {a.max_p99_ms:.0f}")
        busy = r.server_cpu / r.wall_secs / len(_cpus(a.server_cpus))
        if busy > a.max_server_cpu:
            r.why.append(f"server CPU {busy:.0%} > {a.max_server_cpu:.0%}")
        r.saturated = bool(r.why)
        if r.client_cpu / r.wall_secs > 0.9:
            r.notes.append("LOAD GENERATOR CPU-BOUND: not the servers' limit")
        if r.loss < 0:
            r.notes.append(f"{-r.loss} DUPLICATE deliveries")
        if r.closes:
            r.notes.append(f"server closed sockets: {r.closes}")
        if s.lost:
            r.notes.append(f"{s.lost} sockets lost without a close frame")
        if spies:
            self.finish_profilers(spies)
        return r

    async def run(self) -> list[StepResult]:
        a = self.args
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=a.max_inflight)) as http:
            self.http = http
            try:
                await self.setup()
                self.log(_header())
                passed: float | None = None
                failed: float | None = None
                for rate in [float(x) for x in a.rates.split(",")]:
                    r = await self.run_step(rate, f"{rate:g}")
                    if r.saturated:
                        failed = rate if failed is None else failed
                        if r.received_dps < a.min_received * r.offered_dps:
                            break
                        # Saturated by CPU or latency while still delivering what was offered: the
                        # throughput limit (and the cost per delivery there) is one rate higher.
                        continue
                    if failed is None:
                        passed = rate
                # Narrow the boundary between the last sustained and the first saturated rate.
                for _ in range(a.refine if passed is not None and failed is not None else 0):
                    rate = round(math.sqrt(passed * failed), 1)
                    if rate in (passed, failed):
                        break
                    r = await self.run_step(rate, f"{rate:g}")
                    if r.saturated:
                        failed = rate
                    else:
                        passed = rate
                if a.eighty and passed is not None and failed is not None:
                    rate = round(0.8 * passed, 1)
                    await self.run_step(rate, f"{rate:g} (80%)")
                if a.profile:
                    rate = a.profile_rate or round(0.8 * (passed or float(a.rates.split(",")[0])), 1)
                    await self.run_step(rate, f"{rate:g} (profiled)", profile=True)
            finally:
                for sub in self.subs:
                    sub.close()
                await asyncio.sleep(0.5)
        return self.results

    async def run_step(self, rate: float, label: str, profile: bool = False) -> StepResult:
        a = self.args
        retries = a.retry_noisy if a.quiet_wait > 0 and not profile else 0
        r = await self.step(rate, label, profile)
        while retries and r.foreign_cpu / r.wall_secs > a.quiet_cores:
            retries -= 1
            self.log(f"  other load {r.foreign_cpu / r.wall_secs:.2f} cores during step {label}: measuring it again")
            r = await self.step(rate, label, profile)
        self.results.append(r)
        self.log(_row(r))
        return r

    # -- profiling --------------------------------------------------------------------------------
    def start_profilers(self, secs: float) -> list[tuple[int, Path, subprocess.Popen]]:
        if not self.args.py_spy:
            raise SystemExit("--profile needs py-spy (pip install py-spy; or --py-spy PATH)")
        out = []
        for pid in self.servers.worker_pids():
            path = self.servers.log_dir / f"profile-{pid}.txt"
            cmd = [self.args.py_spy, "record", "--pid", str(pid), "--duration", str(int(secs)), "--rate", "250",
                   "--format", "raw", "--function", "--nonblocking", "--output", str(path)]
            out.append((pid, path, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        return out

    def finish_profilers(self, spies: list[tuple[int, Path, subprocess.Popen]]) -> None:
        for pid, path, proc in spies:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if path.exists():
                self.log(f"\nprofile of server process {pid} ({path}):\n{summarize_profile(path)}")


def summarize_profile(path: Path, top: int = 25) -> str:
    """Self and inclusive time per function from py-spy's raw (collapsed) stacks."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        own[frames[-1]] += n
        for f in set(frames[1:]):  # the first frame is the thread
            incl[f] += n
    if not total:
        return "  (no samples)"
    lines = [f"  {total} busy samples; self time:"]
    lines += [f"    {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines.append("  inclusive time:")
    lines += [f"    {100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top)]
    return "\n".join(lines)


# -- report ---------------------------------------------------------------------------------------
COLUMNS = ["posts/s offered", "posts/s sent", "deliveries/s offered", "deliveries/s received", "loss",
           "p50 ms", "p99 ms", "max ms", "server CPU", "server µs/delivery (kernel)", "deliveries per server CPU-s",
           "Redis CPU", "PG CPU", "client CPU", "client µs/delivery (kernel)", "frames/read", "POST p99 ms", "other load (cores)", "saturated"]


def _f(x: float | None, fmt: str = "{:,.0f}") -> str:
    return "–" if x is None else fmt.format(x)


def _per(cpu_secs: float, deliveries: int) -> str:
    """CPU µs per delivery."""
    return _f(cpu_secs / deliveries * 1e6 if deliveries else None, "{:.1f}")


def _header() -> str:
    return "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS)


def _row(r: StepResult) -> str:
    w = r.wall_secs
    cells = [
        r.label, _f(r.sent_rate, "{:,.1f}"), _f(r.offered_dps), _f(r.received_dps), _f(r.loss, "{:,}"),
        _f(r.p50_ms), _f(r.p99_ms), _f(r.max_ms), f"{r.server_cpu / w:.0%}",
        f"{_per(r.server_cpu, r.received)} ({_per(r.server_sys_cpu, r.received)})",
        _f(r.deliveries_per_cpu_sec), f"{r.redis_cpu / w:.0%}", f"{r.pg_cpu / w:.0%}", f"{r.client_cpu / w:.0%}",
        f"{_per(r.client_cpu, r.received)} ({_per(r.client_sys_cpu, r.received)})",
        _f(r.received / r.reads if r.reads else None, "{:.1f}"), _f(r.post_p99_ms),
        f"{max(0.0, r.foreign_cpu) / w:.2f}", "; ".join(r.why + r.notes) if r.why or r.notes else "no",
    ]
    return "| " + " | ".join(cells) + " |"


def _machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model}), load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"


def report(args: argparse.Namespace, results: list[StepResult], nodes: Counter[str]) -> str:
    lines = [
        f"machine: {_machine()}",
        f"{'gunicorn master with ' if args.gunicorn else ''}{args.processes} server processes on CPU {args.server_cpus} "
        f"(with Redis); load generator on CPU {args.client_cpus}",
        f"{args.subscribers} subscribers as {args.users} users; per process: " + ", ".join(str(c) for c in nodes.values()),
        f"{args.step_secs:g} s per step, {args.message_bytes}-byte messages",
        "",
        _header(),
        *(_row(r) for r in results),
    ]
    stepped = [r for r in results if "(" not in r.label]
    over = [r for r in stepped if r.saturated]
    ok = [r for r in stepped if not r.saturated]
    eighty = next((r for r in results if r.label.endswith("(80%)")), None)
    lines.append("")
    if over:
        top = max(over, key=lambda r: r.received_dps)
        first = min(over, key=lambda r: r.rate)
        lines += [f"saturation: from {first.label} posts/s on ({'; '.join(first.why)})",
                  f"  most deliveries received: {top.received_dps:,.0f}/s (offered {top.label} posts/s); "
                  f"{_f(top.deliveries_per_cpu_sec)} deliveries per server CPU-second there "
                  f"({_per(top.server_cpu, top.received)} µs each, server CPU {top.server_cpu / top.wall_secs:.0%} of a core)"]
    else:
        lines.append("no step saturated the servers: offer higher rates (--rates)")
    if ok:
        best = max(ok, key=lambda r: r.rate)
        lines.append(f"highest sustained rate: {best.label} posts/s = {best.offered_dps:,.0f} deliveries/s, "
                     f"p99 {_f(best.p99_ms)} ms, {_f(best.deliveries_per_cpu_sec)} deliveries per server CPU-second "
                     f"(server CPU {best.server_cpu / best.wall_secs:.0%} of a core)")
    if eighty is not None:
        lines.append(f"at 80% of it ({eighty.label.split()[0]} posts/s = {eighty.offered_dps:,.0f} deliveries/s): "
                     f"p50 {_f(eighty.p50_ms)} ms, p99 {_f(eighty.p99_ms)} ms, max {_f(eighty.max_ms)} ms, "
                     f"loss {eighty.loss}, {_f(eighty.deliveries_per_cpu_sec)} deliveries per server CPU-second"
                     + (f" (saturated: {'; '.join(eighty.why)})" if eighty.saturated else ""))
    bound = [r.label for r in results if r.client_cpu / r.wall_secs > 0.9]
    if bound:
        lines.append(f"WARNING: the load generator's core was saturated in steps {', '.join(bound)}: "
                     "there the limit measured is the client's, not the servers'")
    noisy = [r.label for r in results if r.foreign_cpu / r.wall_secs > args.quiet_cores]
    if noisy:
        lines.append(f"WARNING: other work loaded the machine during steps {', '.join(noisy)} "
                     f"(more than {args.quiet_cores} cores): those figures are pessimistic")
    return "\n".join(lines)


# -- entry point ----------------------------------------------------------------------------------
def _cpus(spec: str) -> set[int]:
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM, and SIGINT even when started in the background (where it is ignored by default),
    # stop the run through the `finally` below: servers and Redis stopped, database dropped.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if not shutil.which("redis-server"):
        print("bench.fanout: redis-server is needed (apt-get install redis-server)", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, _cpus(args.client_cpus))
    log_dir = Path(tempfile.mkdtemp(prefix="rustchat-bench-fanout-"))
    print(f"logs: {log_dir}; {_machine()}", file=sys.stderr, flush=True)
    db = procs.Database(args.pg_url)
    redis: procs.Started | None = None
    servers: procs.Servers | None = None
    bench = None
    status = 0
    try:
        try:
            db.create()
            redis, redis_port = procs.start_redis(args.server_cpus, log_dir)
            servers = procs.Servers(count=args.processes, gunicorn=args.gunicorn, cpus=args.server_cpus,
                                    database_url=db.url, redis_url=f"redis://127.0.0.1:{redis_port}/0",
                                    send_queue=args.send_queue, log_dir=log_dir)
            print(f"starting {args.processes} server processes ...", file=sys.stderr, flush=True)
            servers.start()
            bench = Bench(args, servers, redis, db)
            uvloop.run(asyncio.wait_for(bench.run(), args.max_minutes * 60))
        finally:
            # A second signal must not cut the clean-up short.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            if servers is not None:
                servers.stop()
            if redis is not None:
                redis.stop()
            db.drop()
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'SIGINT'}); servers and Redis stopped, database dropped", file=sys.stderr)
        status = 130
    except TimeoutError:
        print(f"stopped after --max-minutes {args.max_minutes:g}; servers and Redis stopped, database dropped",
              file=sys.stderr)
        status = 1
    results = bench.results if bench else []
    print("\n" + report(args, results, bench.nodes if bench else Counter()), flush=True)
    out = args.json or log_dir / "results.json"
    out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "machine": _machine(),
                               "nodes": dict(bench.nodes) if bench else {},
                               "steps": [r.summary() for r in results]}, indent=2))
    print(f"results: {out}", file=sys.stderr)
    return status
