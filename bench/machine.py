"""What the run ran on: machine, versions, date, load."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PACKAGES = [
    "Flask-Tasks",
    "flask",
    "redis",
    "hiredis",
    "celery",
    "kombu",
    "billiard",
    "rq",
    "dramatiq",
    "huey",
]

_VERSIONS = """
import json, sys
from importlib import metadata
versions = {"python": sys.version.split()[0]}
for name in %r:
    try:
        versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        versions[name] = None
print(json.dumps(versions))
"""


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def describe_host() -> dict[str, Any]:
    """The machine and the checkout: date, platform, CPU, cores, memory, commit."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--", "flask_tasks")),
    }


def describe_machine(options: Any, redis_url: str) -> dict[str, Any]:
    import redis

    versions = json.loads(
        subprocess.run(
            [options.python, "-c", _VERSIONS % (PACKAGES,)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    client = redis.Redis.from_url(redis_url)
    server = client.info("server")
    client.close()
    return {
        **describe_host(),
        "versions": versions,
        "redis_server": server.get("redis_version"),
        "settings": {
            "n": options.n,
            "repeat": options.repeat,
            "roundtrips": options.roundtrips,
            "growth": options.growth,
            "growth_repeat": options.growth_repeat,
            "configs": options.configs,
            "idle_settle": options.idle_settle,
        },
    }


class CpuMeter:
    """How much CPU other work on the machine used while the benchmark ran.

    Busy time of the whole machine (``/proc/stat``) less the CPU time of this process and
    everything it started (live descendants, and reaped ones through ``cutime``/``cstime``).
    """

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK")
        self.started = self._snapshot()

    def _snapshot(self) -> tuple[float, float, float]:
        from bench.procs import process_tree

        with open("/proc/stat") as file:
            fields = [int(value) for value in file.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
        busy = sum(fields) - fields[3] - fields[4]
        ours = 0
        for pid in process_tree(os.getpid()):
            try:
                with open(f"/proc/{pid}/stat") as file:
                    stat = file.read()
            except OSError:
                continue
            values = stat[stat.rfind(")") + 2 :].split()
            ours += sum(int(value) for value in values[11:15])  # utime stime cutime cstime
        return busy / self.tick, ours / self.tick, time.monotonic()

    def lap(self) -> dict[str, float]:
        """Since the last lap: wall seconds, cores busy with our work and with other work."""
        now = self._snapshot()
        busy, ours, wall = (now[i] - self.started[i] for i in range(3))
        self.started = now
        wall = max(wall, 1e-9)
        return {
            "seconds": wall,
            "ours_cores": ours / wall,
            "other_cores": max(0.0, busy - ours) / wall,
        }
