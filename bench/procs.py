"""Worker processes: start them, measure their memory, stop them (Linux ``/proc``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Optional

#: How long a warm shutdown may take before the process group is killed.
STOP_TIMEOUT = 20.0


def _stats() -> dict[int, list[str]]:
    """pid -> the fields of /proc/PID/stat after the command name (state, ppid, pgrp,
    session, ...) for every process alive now."""
    stats = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                stat = file.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: parse after the last ')'.
        stats[int(entry)] = stat[stat.rfind(")") + 2 :].split()
    return stats


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid, fields in _stats().items():
        children.setdefault(int(fields[1]), []).append(pid)
    return children


def session_members(session: int) -> list[int]:
    """Processes alive in the session ``session`` (zombies excluded)."""
    return [
        pid for pid, fields in _stats().items() if int(fields[3]) == session and fields[0] != "Z"
    ]


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants alive now."""
    children = _children_map()
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        if os.path.exists(f"/proc/{pid}"):
            found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def _status_kib(pid: int, field: str, path: str = "status") -> int:
    try:
        with open(f"/proc/{pid}/{path}") as file:
            for line in file:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Memory:
    """Memory of a set of processes, KiB. RSS counts pages shared after a fork once per
    process; PSS splits them between the sharers (so it adds up across a pool)."""

    rss_kib: int
    pss_kib: int
    processes: int

    def as_dict(self) -> dict[str, int]:
        return {"rss_kib": self.rss_kib, "pss_kib": self.pss_kib, "processes": self.processes}


def memory_of(pids: Sequence[int]) -> Memory:
    rss = sum(_status_kib(pid, "VmRSS") for pid in pids)
    pss = sum(_status_kib(pid, "Pss", "smaps_rollup") for pid in pids)
    return Memory(rss, pss, len(pids))


class WorkerGroup:
    """The worker processes of one configuration, each in a session of its own."""

    def __init__(
        self, commands: Sequence[Sequence[str]], env: dict[str, str], cwd: Path, log: Path
    ) -> None:
        self.log: IO[bytes] = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.started = time.time()
        self.processes = [
            subprocess.Popen(
                list(command),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self.log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            for command in commands
        ]

    def pids(self) -> list[int]:
        return [pid for process in self.processes for pid in process_tree(process.pid)]

    def memory(self) -> Memory:
        return memory_of(self.pids())

    def check_alive(self) -> Optional[str]:
        """A message naming the first worker that exited, or None."""
        for process in self.processes:
            if process.poll() is not None:
                return f"worker {' '.join(map(str, process.args))} exited with {process.returncode}"
        return None

    def stop(self) -> float:
        """Warm shutdown (SIGTERM), then SIGKILL the sessions; returns the seconds taken."""
        started = time.perf_counter()
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
        for process in self.processes:
            # Leftovers (such as pool children) in the session we started it in.
            for pid in session_members(process.pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            process.wait()
        self.log.close()
        return time.perf_counter() - started
