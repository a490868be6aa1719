"""Peer: box-bot's webhook intake beside a minimal Probot app, on the same machine and load.

Probot (npm package `probot`, installed by this script into a temporary folder) serves its
webhook middleware with a handler that does nothing on each (event, action) box-bot's
handlers take; it verifies the signature and answers once the handlers return, keeping
nothing. box-bot verifies, stores what could lead to work durably and answers 202, with its
worker running. Both take the same mix of recorded deliveries as `bench.intake` (each
recorded payload of a subscribed event once, in turn), saturated (wrk when installed) and at
a fixed 500 requests/s. Needs `node` and `npm`; without them it says so and exits 0 having
measured nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    SECRET,
    Kind,
    ServerProcess,
    app_env,
    failed_requests,
    free_port,
    load_label,
    print_table,
    run_benchmark,
    simulators,
    temp_dir,
    verdict,
)
from bench.intake import app_ready, describe_mix, mix_line, warm_and_measure, workloads
from handlers import build_router

NAME = "peer"
PROBOT_VERSION = "13"
PROBOT_APP = """
const http = require("node:http");
const { Probot, createNodeMiddleware } = require("probot");

const probot = new Probot({
  appId: Number(process.env.APP_ID),
  privateKey: process.env.PRIVATE_KEY,
  secret: process.env.WEBHOOK_SECRET,
  logLevel: "warn",
});
const app = (bot) => {
  bot.on(JSON.parse(process.env.HANDLED_EVENTS), async () => {});
};
const middleware = createNodeMiddleware(app, { probot, webhooksPath: "/api/github/webhooks" });
const server = http.createServer((req, res) => {
  middleware(req, res, () => {
    res.writeHead(404);
    res.end();
  });
});
const port = Number(process.env.PORT);
server.listen(port, "127.0.0.1", () => console.log(`READY ${port}`));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}", description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="length of each measured phase")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of load before measuring")
    parser.add_argument("--concurrency", type=int, default=32, help="connections when saturated")
    parser.add_argument("--rate", type=float, default=500.0, help="fixed-rate requests/s")
    return parser.parse_args(argv)


def install_probot(folder: Path) -> str:
    """Install Probot into *folder*, write the app next to it; return Probot's version."""
    subprocess.run(["npm", "init", "-y"], cwd=folder, check=True, capture_output=True, timeout=120)
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", f"probot@{PROBOT_VERSION}"],
        cwd=folder,
        check=True,
        capture_output=True,
        timeout=600,
    )
    (folder / "app.js").write_text(PROBOT_APP, encoding="utf-8")
    package = json.loads((folder / "node_modules/probot/package.json").read_text())
    return str(package["version"])


def _node_version() -> str:
    return subprocess.run(["node", "--version"], capture_output=True, text=True).stdout


def handled_events() -> list[str]:
    """The (event, action) pairs box-bot's handlers take, as Probot names them."""
    routes = build_router().routes
    return sorted(event if action is None else f"{event}.{action}" for event, action in routes)


async def measure(
    server: ServerProcess, args: argparse.Namespace, mode: str, kinds: tuple[Kind, ...]
) -> dict[str, Any]:
    """Warm *server* up, then measure one phase of *mode* against it."""
    _warm, result = await warm_and_measure(server, mode, args, kinds)
    return result.to_json()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure box-bot and Probot in both modes; return the results document."""
    folder = temp_dir(NAME)
    probot_dir = folder / "probot"
    probot_dir.mkdir()
    version = await asyncio.to_thread(install_probot, probot_dir)
    node_version = (await asyncio.to_thread(_node_version)).strip()
    loads = workloads()
    mix = loads["mix"]
    phases: list[dict[str, Any]] = []
    async with simulators() as (github, box):
        for mode in ("saturated", "fixed_rate"):
            env = app_env(github, box, folder / f"app-{mode}.sqlite3")
            app = ServerProcess.box_bot(env, folder / f"app-{mode}.log")
            async with app:
                await app_ready(app, github)
                phases.append({"server": "box-bot", **await measure(app, args, mode, mix)})
            node_env = {
                **env,
                "PORT": str(free_port()),
                "WEBHOOK_SECRET": SECRET,
                "HANDLED_EVENTS": json.dumps(handled_events()),
            }
            node = shutil.which("node") or "node"
            probot = ServerProcess([node, str(probot_dir / "app.js")], node_env, folder / "p.log")
            async with probot:
                phases.append({"server": "probot", **await measure(probot, args, mode, mix)})
    by = {(p["server"], p["mode"]): p for p in phases}
    ratio = by["box-bot", "closed"]["requests_per_s"] / by["probot", "closed"]["requests_per_s"]
    p99 = {name: by[name, "open"]["latency"]["p99_ms"] for name in ("box-bot", "probot")}
    return {
        "probot_version": version,
        "node": node_version,
        "mix": describe_mix(mix, loads["stored"]),
        "settings": vars(args),
        "phases": phases,
        "throughput_ratio_box_bot_to_probot": round(ratio, 3),
        "p99_ms_at_rate": p99,
        "p99_no_worse_than_probot": p99["box-bot"] <= p99["probot"],
        "work_dir": str(folder),
    }


def report(result: dict[str, Any]) -> None:
    """Print the mix, the phases, the ratio and the tail at the fixed rate."""
    print(mix_line(result["mix"]))
    rows = [
        [
            p["server"],
            load_label(p),
            p["tool"],
            p["requests_per_s"],
            p["latency"]["p50_ms"],
            p["latency"]["p99_ms"],
            failed_requests(p),
            p["server_cpu_share"],
        ]
        for p in result["phases"]
    ]
    print_table(
        f"Webhook intake: box-bot beside Probot {result['probot_version']} (node {result['node']})",
        ["server", "load", "tool", "req/s", "p50 ms", "p99 ms", "errors", "server cpu"],
        rows,
    )
    print(
        f"\nthroughput box-bot/Probot = {result['throughput_ratio_box_bot_to_probot']:.2f}"
        " (box-bot stores what could lead to work durably before answering; Probot keeps nothing)"
    )
    p99 = result["p99_ms_at_rate"]
    print(
        f"p99 at {result['settings']['rate']:.0f} req/s: box-bot {p99['box-bot']:.1f} ms,"
        f" Probot {p99['probot']:.1f} ms (target: no worse than Probot):"
        f" {verdict(result['p99_no_worse_than_probot'])}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        print(f"{' and '.join(missing)} not installed: the Probot comparison was not measured")
        return 0
    return run_benchmark(NAME, lambda: run(parse_args(argv)), report)


if __name__ == "__main__":
    sys.exit(main())
