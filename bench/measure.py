"""Measuring tools: Redis server statistics, producer processes, summaries."""

from __future__ import annotations

import json
import math
import queue
import statistics
import subprocess
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Optional

from bench.configs import Detector


class RedisStats:
    """Commands, socket reads and CPU time of the Redis server between ``begin`` and
    ``end``, less what the harness itself sent (calibrated once, plus the detector's)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.baseline_commands: Counter[str] = Counter()
        self.baseline_reads = 0
        self._cpu = 0.0
        self._usec: Counter[str] = Counter()
        self.begin()
        commands, reads, _cpu = self._read()
        self.baseline_commands, self.baseline_reads = commands, reads

    def _cpu_seconds(self) -> float:
        info = self.client.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def begin(self) -> None:
        self._cpu = self._cpu_seconds()
        self.client.config_resetstat()

    def _read(self) -> tuple[Counter[str], int, float]:
        info = self.client.info("everything")
        commands: Counter[str] = Counter()
        self._usec = Counter()
        for key, value in info.items():
            if key.startswith("cmdstat_") and isinstance(value, Mapping):
                commands[key[len("cmdstat_") :]] = int(value["calls"])
                self._usec[key[len("cmdstat_") :]] = int(value["usec"])
        cpu = float(info["used_cpu_sys"]) + float(info["used_cpu_user"]) - self._cpu
        return commands, int(info.get("total_reads_processed", 0)), cpu

    def end(self, tasks: int, detector: Optional[Detector] = None) -> dict[str, Any]:
        """Per-task figures since ``begin`` (``tasks`` is what the work was)."""
        commands, reads, cpu = self._read()
        commands.subtract(self.baseline_commands)
        reads -= self.baseline_reads
        if detector is not None:
            commands.subtract(detector.commands)
            reads -= detector.round_trips
        commands = Counter({name: calls for name, calls in commands.items() if calls > 0})
        total = sum(commands.values())
        return {
            "tasks": tasks,
            "commands": total / tasks,
            "round_trips": reads / tasks,
            "scripts": sum(commands[name] for name in ("evalsha", "eval", "fcall")) / tasks,
            "cpu_us": cpu * 1e6 / tasks,
            "breakdown": {name: calls / tasks for name, calls in commands.most_common()},
            # Server time inside each command; a script's time includes its own calls.
            "usec": {name: self._usec[name] / tasks for name in commands},
        }


class ClientProcess:
    """A ``bench.client`` process, driven line by line (see its docstring)."""

    def __init__(
        self,
        python: str,
        library: str,
        action: str,
        count: int,
        env: dict[str, str],
        cwd: Path,
        log: Path,
        ids_out: Optional[Path] = None,
    ) -> None:
        command = [python, "-m", "bench.client", library, action, "--n", str(count)]
        if ids_out is not None:
            command += ["--ids-out", str(ids_out)]
        self.log: IO[bytes] = open(log, "ab")  # noqa: SIM115 - closed in finish()
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        self.lines: queue.Queue[Optional[str]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str, timeout: float) -> str:
        """The next line starting with ``prefix`` (other output is skipped)."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"producer gave no {prefix!r} within {timeout:.0f}s") from None
            if line is None:
                self.process.wait()
                raise RuntimeError(
                    f"producer exited ({self.process.returncode}) before {prefix!r}; "
                    f"see {self.log.name}"
                )
            if line.startswith(prefix):
                return line

    def send(self, line: str = "go") -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def outcome(self, timeout: float) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.expect("{", timeout))
        self.finish()
        return result

    def finish(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


# -- summaries -----------------------------------------------------------------------------


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` 0.5 = median of the samples)."""
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]


def spread(values: Sequence[float]) -> Optional[dict[str, float]]:
    """Median, min and max of repeated measurements (None if there are none)."""
    values = [value for value in values if value is not None]
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }
