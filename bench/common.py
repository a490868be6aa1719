"""What the benchmarks share: machine facts, result files, payloads, server processes and load."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import json
import math
import os
import platform
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bot.ingress.webhook import sign
from bot.sim.box import BoxSimulator
from bot.sim.github import GitHubSimulator

ROOT = Path(__file__).resolve().parent.parent
WEBHOOKS = ROOT / "tests" / "fixtures" / "webhooks"
RESULTS = Path(__file__).resolve().parent / "results"
WEBHOOK_PATH = "/api/github/webhooks"
SECRET = "bench-webhook-secret-0123456789abcdef"
BOX_KEY = "box_live_benchkey0123456789abcdef"
APP_ID = 321
APP_SLUG = "box-bot"
INSTALLATION_ID = 4242
READY_PREFIX = "READY "
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=60)
WRK_SCRIPT = """
local counter = 0
function setup(thread)
  made = (made or 0) + 1
  thread:set("thread_id", made)
end
function init(args)
  kinds = {}
  for line in io.lines(args[1]) do
    local event, signature, path = line:match("^(%S+) (%S+) (.+)$")
    local file = io.open(path, "rb")
    kinds[#kinds + 1] = {event = event, signature = signature, body = file:read("*a")}
    file:close()
  end
  prefix = args[2]
end
function request()
  local kind = kinds[counter % #kinds + 1]
  counter = counter + 1
  local headers = {
    ["Content-Type"] = "application/json",
    ["User-Agent"] = "GitHub-Hookshot/bench",
    ["X-GitHub-Event"] = kind.event,
    ["X-Hub-Signature-256"] = kind.signature,
    ["X-GitHub-Delivery"] = string.format("%s-%d-%d", prefix, thread_id, counter),
  }
  return wrk.format("POST", nil, headers, kind.body)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_JSON {\\"requests\\": %d, \\"duration_us\\": %d, \\"status_errors\\": %d,"
    .. " \\"socket_errors\\": %d, \\"p50_us\\": %d, \\"p90_us\\": %d, \\"p99_us\\": %d,"
    .. " \\"max_us\\": %d, \\"mean_us\\": %.1f}\\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


# -- machine facts and results ------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """Return what was measured on: cores, CPU model, Python, tools, the date and the load."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "aiohttp": aiohttp.__version__,
        "wrk": shutil.which("wrk"),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        # Over the last 1, 5 and 15 minutes, as the run ends: above the benchmark's own share
        # of the cores, other work shared the machine.
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def write_result(name: str, data: Mapping[str, Any]) -> Path:
    """Write `bench/results/<name>.json` with the machine facts; return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    document = {"benchmark": name, "machine": machine_info(), **data}
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def run_benchmark(
    name: str,
    measure: Callable[[], Coroutine[Any, Any, dict[str, Any]]],
    report: Callable[[dict[str, Any]], None],
) -> int:
    """Run one benchmark, print its report and write `bench/results/<name>.json`."""
    result = asyncio.run(measure())
    report(result)
    print(f"\nwritten {write_result(name, result)}")
    return 0


def load_label(phase: Mapping[str, Any]) -> str:
    """Name a load phase as the tables do: saturated, or its fixed rate."""
    return "saturated" if phase["mode"] == "closed" else f"{phase['target_rate']:.0f}/s open"


def failed_requests(phase: Mapping[str, Any]) -> int:
    """Count a phase's requests that failed: connection errors and non-2xx answers."""
    statuses: Mapping[str, int] = phase["statuses"]
    errors: int = phase["errors"]
    return errors + sum(n for status, n in statuses.items() if not status.startswith("2"))


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows under headers as an aligned plain-text table."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def verdict(ok: bool) -> str:
    """Return the word a target line ends with."""
    return "PASS" if ok else "MISS"


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """Return count, mean and percentiles (ms) of latencies given in seconds."""
    ordered = sorted(seconds)

    def pick(q: float) -> float:
        if not ordered:
            return math.nan
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] * 1000

    mean = sum(ordered) / len(ordered) * 1000 if ordered else math.nan
    return {
        "count": len(ordered),
        "mean_ms": round(mean, 3),
        "p50_ms": round(pick(0.50), 3),
        "p90_ms": round(pick(0.90), 3),
        "p99_ms": round(pick(0.99), 3),
        "max_ms": round(pick(1.0), 3),
    }


# -- payloads and signed deliveries -------------------------------------------------------------


def load_payload(name: str, installation_id: int = INSTALLATION_ID) -> dict[str, Any]:
    """Read a recorded payload (`event.action.N`) as a delivery to this app's installation."""
    data: dict[str, Any] = json.loads((WEBHOOKS / f"{name}.json").read_text(encoding="utf-8"))
    # Installation events describe theirs (account, permissions): keep it, with our id.
    data["installation"] = {
        **(data.get("installation") or {}),
        "id": installation_id,
        "node_id": f"MDIz{installation_id}",
    }
    return data


def delivery_headers(event: str, body: bytes, delivery_id: str) -> dict[str, str]:
    """Return the headers GitHub sends with a signed delivery."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/bench",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery_id,
        "X-Hub-Signature-256": sign(SECRET, body),
    }


@dataclass(frozen=True)
class Kind:
    """One kind of delivery: a named body sent as *event*."""

    name: str
    event: str
    body: bytes

    @property
    def signature(self) -> str:
        return sign(SECRET, self.body)


@dataclass(frozen=True)
class Target:
    """Deliveries sent over and over in turn, each with its own delivery id."""

    url: str
    kinds: tuple[Kind, ...]
    prefix: str = field(default_factory=lambda: f"bench-{os.getpid()}-{time.time_ns()}")

    @classmethod
    def one(cls, url: str, event: str, body: bytes) -> Target:
        """Return a target that sends the same body every time."""
        return cls(url, (Kind(event, event, body),))

    def kind(self, number: int) -> Kind:
        """Return what delivery *number* carries."""
        return self.kinds[number % len(self.kinds)]

    def headers(self, number: int) -> dict[str, str]:
        """Return the headers of delivery *number*."""
        return delivery_headers(
            self.kind(number).event, self.kind(number).body, f"{self.prefix}-{number}"
        )


async def post_delivery(
    session: aiohttp.ClientSession, url: str, event: str, payload: Mapping[str, Any], delivery: str
) -> int:
    """Post one signed delivery and return the HTTP status."""
    body = json.dumps(payload).encode()
    async with session.post(url, data=body, headers=delivery_headers(event, body, delivery)) as r:
        await r.read()
        return r.status


# -- simulators ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FixtureRepo:
    """The repository, owner and sender of the recorded payloads."""

    full_name: str
    repo_id: int
    sender: str


def fixture_repo() -> FixtureRepo:
    """Return the repository the recorded `issue_comment.created` payload comes from."""
    data = load_payload("issue_comment.created.1")
    repo = data["repository"]
    return FixtureRepo(repo["full_name"], int(repo["id"]), data["sender"]["login"])


@contextlib.asynccontextmanager
async def simulators(**box_options: Any) -> AsyncIterator[tuple[GitHubSimulator, BoxSimulator]]:
    """Run both simulators on loopback ports, seeded with the fixture repository."""
    github = GitHubSimulator(app_id=APP_ID, app_slug=APP_SLUG)
    box = BoxSimulator(BOX_KEY, seed=7, **box_options)
    await github.start()
    await box.start()
    repo = fixture_repo()
    github.add_installation(INSTALLATION_ID, repo.full_name.split("/")[0])
    github.add_repo(repo.full_name, installation_id=INSTALLATION_ID, repo_id=repo.repo_id)
    github.set_permission(repo.full_name, repo.sender, "admin")
    box.add_repo(repo.full_name, github_id=repo.repo_id)
    try:
        yield github, box
    finally:
        await box.close()
        await github.close()


# -- server processes ---------------------------------------------------------------------------


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def app_env(
    github: GitHubSimulator, box: BoxSimulator, database: Path, **extra: str
) -> dict[str, str]:
    """Return the environment `box-bot serve` would run with against the simulators."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env.update(
        APP_ID=str(APP_ID),
        PRIVATE_KEY=github.private_key_pem,
        WEBHOOK_SECRET=SECRET,
        GITHUB_API_URL=github.base_url,
        BOX_API_BASE=box.base_url,
        BOX_API_KEY=BOX_KEY,
        DATABASE_URL=f"sqlite:///{database}",
        HOST="127.0.0.1",
        PORT=str(free_port()),
        LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


class ServerProcess:
    """A server in its own process that prints `READY <port>` once it listens."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.command = list(command)
        self.env = dict(env)
        self.log = log
        self.port = 0
        self._proc: asyncio.subprocess.Process | None = None

    @classmethod
    def box_bot(cls, env: Mapping[str, str], log: Path, *args: str) -> ServerProcess:
        """Return the process for `python -m bench.serve_app` with *args*."""
        return cls([sys.executable, "-m", "bench.serve_app", *args], env, log)

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, within: float = 30.0) -> None:
        """Start the process and wait (up to *within* seconds) for its ready line."""
        with self.log.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                *self.command,
                cwd=ROOT,
                env=self.env,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        assert self._proc.stdout is not None
        async with asyncio.timeout(within):
            while True:
                line = (await self._proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"{self.command[-1]} exited early; see {self.log}")
                if line.startswith(READY_PREFIX):
                    self.port = int(line.removeprefix(READY_PREFIX).strip())
                    return

    async def stop(self, grace: float = 40.0) -> int | None:
        """Ask the process to stop (SIGTERM), then kill it if it has not after *grace* s."""
        if self._proc is None or self._proc.returncode is not None:
            return None if self._proc is None else self._proc.returncode
        self._proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                return await self._proc.wait()
        except TimeoutError:
            self._proc.kill()
            return await self._proc.wait()

    async def __aenter__(self) -> ServerProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU seconds a process has used (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    """Return a process's resident memory in KiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def temp_dir(name: str) -> Path:
    """Return a fresh directory for one benchmark's databases and logs."""
    return Path(tempfile.mkdtemp(prefix=f"box-bot-bench-{name}-"))


async def wait_for(check: Any, within: float, every: float = 0.05) -> Any:
    """Poll *check* (sync or async) until it returns something truthy, for *within* s."""
    async with asyncio.timeout(within):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
            await asyncio.sleep(every)


# -- load generation ----------------------------------------------------------------------------


@dataclass
class LoadResult:
    """What one load phase measured."""

    tool: str
    mode: str
    duration: float
    sent: int
    ok: int
    statuses: dict[str, int]
    errors: int
    latency: dict[str, float]
    concurrency: int | None = None
    rate: float | None = None
    send_lag: dict[str, float] | None = None
    client_cpu: float | None = None
    server_cpu: float | None = None

    @property
    def rps(self) -> float:
        return self.ok / self.duration if self.duration else 0.0

    def to_json(self) -> dict[str, Any]:
        """Return the result as plain JSON."""
        return {
            "tool": self.tool,
            "mode": self.mode,
            "concurrency": self.concurrency,
            "target_rate": self.rate,
            "duration_s": round(self.duration, 3),
            "sent": self.sent,
            "ok": self.ok,
            "statuses": self.statuses,
            "errors": self.errors,
            "requests_per_s": round(self.rps, 1),
            "latency": self.latency,
            "send_lag": self.send_lag,
            "client_cpu_share": self.client_cpu,
            "server_cpu_share": self.server_cpu,
        }


def _session(limit: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit)
    return aiohttp.ClientSession(connector=connector, timeout=CLIENT_TIMEOUT)


async def closed_loop(target: Target, concurrency: int, duration: float) -> LoadResult:
    """Keep *concurrency* requests in flight for *duration* seconds (aiohttp client)."""
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    errors = 0
    numbers = itertools.count()
    async with _session(concurrency) as session:
        deadline = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal errors
            while (began := time.perf_counter()) < deadline:
                number = next(numbers)
                try:
                    async with session.post(
                        target.url + WEBHOOK_PATH,
                        data=target.kind(number).body,
                        headers=target.headers(number),
                    ) as response:
                        await response.read()
                        statuses[str(response.status)] += 1
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - began)

        cpu, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return LoadResult(
        tool="aiohttp",
        mode="closed",
        duration=elapsed,
        sent=sum(statuses.values()) + errors,
        ok=sum(n for status, n in statuses.items() if status.startswith("2")),
        statuses=dict(statuses),
        errors=errors,
        latency=latency_summary(latencies),
        concurrency=concurrency,
        client_cpu=round((time.process_time() - cpu) / elapsed, 3),
    )


async def open_loop(
    target: Target, rate: float, duration: float, connections: int = 256
) -> LoadResult:
    """Send at fixed times (*rate* per second); latency counts from each scheduled time."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    lags: list[float] = []
    statuses: Counter[str] = Counter()
    errors = 0

    async def one(number: int, scheduled: float) -> None:
        nonlocal errors
        lags.append(loop.time() - scheduled)
        try:
            async with session.post(
                target.url + WEBHOOK_PATH,
                data=target.kind(number).body,
                headers=target.headers(number),
            ) as response:
                await response.read()
                statuses[str(response.status)] += 1
        except (aiohttp.ClientError, TimeoutError):
            errors += 1
            return
        latencies.append(loop.time() - scheduled)

    total = int(rate * duration)
    async with _session(connections) as session:
        cpu, start = time.process_time(), loop.time() + 0.05
        tasks = []
        for number in range(total):
            scheduled = start + number / rate
            if (delay := scheduled - loop.time()) > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(number, scheduled)))
        await asyncio.gather(*tasks)
        elapsed = loop.time() - start
    return LoadResult(
        tool="aiohttp",
        mode="open",
        duration=duration,
        sent=total,
        ok=sum(n for status, n in statuses.items() if status.startswith("2")),
        statuses=dict(statuses),
        errors=errors,
        latency=latency_summary(latencies),
        rate=rate,
        send_lag=latency_summary(lags),
        client_cpu=round((time.process_time() - cpu) / elapsed, 3),
    )


async def wrk_closed_loop(
    target: Target, concurrency: int, duration: int, threads: int = 1
) -> LoadResult:
    """Run `wrk` with a Lua script that gives every request its own delivery id."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed")
    folder = Path(tempfile.mkdtemp(prefix="box-bot-wrk-"))
    lines = []
    for number, kind in enumerate(target.kinds):
        path = folder / f"body-{number}.json"
        path.write_bytes(kind.body)
        lines.append(f"{kind.event} {kind.signature} {path}\n")
    (folder / "kinds.txt").write_text("".join(lines), encoding="utf-8")
    (folder / "deliveries.lua").write_text(WRK_SCRIPT, encoding="utf-8")
    command = [
        wrk,
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "-s",
        str(folder / "deliveries.lua"),
        target.url + WEBHOOK_PATH,
        "--",
        str(folder / "kinds.txt"),
        target.prefix,
    ]
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    shutil.rmtree(folder, ignore_errors=True)
    line = next((x for x in out.decode().splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {out.decode()} {err.decode()}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    elapsed = data["duration_us"] / 1e6
    ok = data["requests"] - data["status_errors"]
    return LoadResult(
        tool="wrk",
        mode="closed",
        duration=elapsed,
        sent=data["requests"],
        ok=ok,
        statuses={"2xx": ok, "other": data["status_errors"]},
        errors=data["socket_errors"],
        latency={
            "count": data["requests"],
            "mean_ms": round(data["mean_us"] / 1000, 3),
            "p50_ms": data["p50_us"] / 1000,
            "p90_ms": data["p90_us"] / 1000,
            "p99_ms": data["p99_us"] / 1000,
            "max_ms": data["max_us"] / 1000,
        },
        concurrency=concurrency,
    )


async def saturate(target: Target, concurrency: int, duration: int) -> LoadResult:
    """Measure the most requests per second the server answers: wrk if installed, else aiohttp."""
    if shutil.which("wrk"):
        return await wrk_closed_loop(target, concurrency, duration)
    return await closed_loop(target, concurrency, duration)
