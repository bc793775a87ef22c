"""Loading the Redis broker's Lua scripts (``lua/*.lua``, one file per atomic command).

Each file opens with a comment listing its KEYS, ARGV and return value. Scripts whose KEYS
start with the core keys (see :meth:`.RedisKeys.core`) get ``lua/lib.lua``, the shared
helpers, prepended (those they call; see :func:`library_for`); Lua line numbers in their
errors count from the top of ``lib.lua``.
"""

from __future__ import annotations

import functools
import os
import re
import weakref
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Callable, Optional

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

LUA = Path(__file__).with_name("lua")
#: Scripts that work on messages: their KEYS start with the core keys.
USES_LIB = (
    "publish",
    "publish_many",
    "publish_one",
    "reserve",
    "extend",
    "ack",
    "release",
    "dead_letter",
    "retry_dead_letter",
    "purge",
)
STANDALONE = ("set_result", "forget_result", "incr", "revoke", "heartbeat")

_WAKE_OFF = "local WAKE_PUBLISH = false"

#: Most commands :meth:`RedisScripts.call` keeps packed (a worker asks for a handful).
_PACKED_LIMIT = 256

#: One script call: the script, its KEYS and its ARGV.
ScriptCall = tuple[Script, Sequence[str], Sequence[Any]]

#: Most connections :meth:`RedisScripts.call` keeps out of the pool between calls.
IDLE_CONNECTIONS = 4

#: hiredis's packing, when installed: redis-py's own, minus its per-argument checks.
_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is optional
    _hiredis_pack = None

#: Every RedisScripts of this process: a forked child forgets their idle connections.
_ALL: weakref.WeakSet[RedisScripts] = weakref.WeakSet()


@functools.cache
def sources(wake_publish: str = "") -> Mapping[str, str]:
    """Each command's Lua source, ``lib.lua`` prepended where it is used. Read once per
    process: a forked worker child uses its parent's copy instead of writing its own.
    ``wake_publish``: the command that also publishes wake-ups on channels (lib.lua;
    ``redis+cluster://``), "" for none."""
    library = (LUA / "lib.lua").read_text(encoding="utf-8")
    if wake_publish:
        library = library.replace(_WAKE_OFF, f'local WAKE_PUBLISH = "{wake_publish}"', 1)
    found: dict[str, str] = {}
    for name in USES_LIB + STANDALONE:
        source = (LUA / f"{name}.lua").read_text(encoding="utf-8")
        found[name] = library_for(library, source) + source if name in USES_LIB else source
    return found


_FUNCTION = re.compile(r"^local function (\w+)\(")
_COMMENT = re.compile(r"--.*")


def library_for(library: str, source: str) -> str:
    """``library`` with only the functions that ``source`` calls, itself or through
    another; the others' lines are left blank (Lua line numbers in errors stay those of
    lib.lua). Its top level runs on every call, and each function defined there is a
    closure made anew: a third of a small script's time when all are."""
    lines = library.split("\n")
    blocks: dict[str, tuple[int, int]] = {}
    for index, line in enumerate(lines):
        match = _FUNCTION.match(line)
        if match:
            blocks[match.group(1)] = (index, lines.index("end", index))
    wanted: set[str] = set()
    pending = [source]
    while pending:
        code = _COMMENT.sub("", pending.pop())
        for name, (start, end) in blocks.items():
            if name not in wanted and re.search(rf"\b{name}\b", code):
                wanted.add(name)
                pending.append("\n".join(lines[start + 1 : end]))
    for name, (start, end) in blocks.items():
        if name not in wanted:
            lines[start : end + 1] = [""] * (end + 1 - start)
    return "\n".join(lines)


class RedisScripts:
    """The Lua commands, registered once on one client (EVALSHA; reloaded on NOSCRIPT)."""

    def __init__(self, client: redis.Redis, *, wake_publish: str = "") -> None:
        scripts = {
            name: client.register_script(source) for name, source in sources(wake_publish).items()
        }
        self.all = scripts
        self.publish = scripts["publish"]
        self.publish_many = scripts["publish_many"]
        self.publish_one = scripts["publish_one"]
        self.reserve = scripts["reserve"]
        self.extend = scripts["extend"]
        self.ack = scripts["ack"]
        self.release = scripts["release"]
        self.dead_letter = scripts["dead_letter"]
        self.retry_dead_letter = scripts["retry_dead_letter"]
        self.purge = scripts["purge"]
        self.set_result = scripts["set_result"]
        self.forget_result = scripts["forget_result"]
        self.incr = scripts["incr"]
        self.revoke = scripts["revoke"]
        self.heartbeat = scripts["heartbeat"]
        #: Connections of ``client``'s pool that ``call`` keeps between calls (see there).
        self._pool = getattr(client, "connection_pool", None)  # none on a cluster client
        self._idle: list[Any] = []
        # Never most of a small pool: the client's other commands need connections too.
        limit = getattr(self._pool, "max_connections", None) or 2**31
        self._keep = max(0, min(IDLE_CONNECTIONS, (limit - 1) // 2))
        #: (sha, ``packed_as``) -> the EVALSHA command as sent (see :meth:`call`).
        self._packed: dict[tuple[str, Hashable], Any] = {}
        _ALL.add(self)

    def preload(self, client: redis.Redis) -> None:
        """Load every script in one round trip, so that no EVALSHA meets NOSCRIPT."""
        pipe = client.pipeline(transaction=False)
        for script in self.all.values():
            pipe.script_load(script.script)
        pipe.execute()

    def call(
        self,
        client: redis.Redis,
        script: Script,
        keys: Sequence[str],
        args: Sequence[Any],
        packed_as: Optional[Hashable] = None,
    ) -> Any:
        """``script(keys, args)`` on a connection of ``client``'s pool, without the
        client's per-command bookkeeping: what a loop of ``delay()`` pays on every call.

        A few connections are kept out of the pool between calls (at most
        ``IDLE_CONNECTIONS``, and under half the pool's ``max_connections``, for the
        client these scripts were made for): taking one back
        from a list is a fraction of the pool's get and release (its locks, queue and
        metrics; each is checked as the pool would). They stay the pool's: closing it
        closes them; a forked child forgets them. NOSCRIPT loads the script and runs it
        again (it ran nothing); a connection or timeout error drops the connection and is
        raised (the client is made with no retries: the callers retry).

        ``packed_as``: a name for this exact command (same keys and arguments), for calls
        made again and again (a worker's reserve): its bytes are packed once, not on every
        call (packing a reserve of 20 queues' keys costs more than the rest of the call)."""
        if client.connection is not None:  # a single-connection client: its own locking
            return script(keys, args, client)
        pool = client.connection_pool
        idle = self._idle if pool is self._pool and self._keep else None
        connection = _take_idle(idle) if idle else None
        if connection is None:
            connection = _take(pool)
        try:
            try:
                if packed_as is None:
                    _send(connection, ("EVALSHA", script.sha, len(keys), *keys, *args))
                else:  # the arguments are only read when the command is not packed yet
                    connection.send_packed_command(
                        self._packed_command(connection, script.sha, packed_as, keys, args)
                    )
                result = connection.read_response()
            except NoScriptError:  # loaded on this connection: the pool may have no other
                _send(connection, ("SCRIPT", "LOAD", script.script))
                sha = connection.read_response()
                script.sha = sha.decode() if isinstance(sha, bytes) else sha
                _send(connection, ("EVALSHA", script.sha, len(keys), *keys, *args))
                result = connection.read_response()
        except redis.ResponseError:
            _give_back(pool, idle, connection, self._keep)
            raise
        except BaseException:
            connection.disconnect()
            pool.release(connection)
            raise
        _give_back(pool, idle, connection, self._keep)
        return result

    def _packed_command(
        self,
        connection: Any,
        sha: str,
        packed_as: Hashable,
        keys: Sequence[str],
        args: Sequence[Any],
    ) -> Any:
        packed = self._packed.get((sha, packed_as))
        if packed is None:
            if len(self._packed) >= _PACKED_LIMIT:
                self._packed.clear()
            command = ("EVALSHA", sha, len(keys), *keys, *args)
            packed = [b"".join(connection.pack_command(*command))]
            self._packed[sha, packed_as] = packed
        return packed

    def pipelined(self, client: redis.Redis, calls: Sequence[ScriptCall]) -> list[Any]:
        """Run ``calls`` (each atomic on its own) in one pipelined round trip.

        redis-py checks a pipeline's scripts with SCRIPT EXISTS first, a round trip of its
        own; the scripts are preloaded instead, and only after a SCRIPT FLUSH or a server
        restart are they loaded again and the calls that met NOSCRIPT (which ran nothing)
        sent again.
        """
        results = self._send(client, calls)
        missing = [index for index, result in enumerate(results) if _no_script(result)]
        if missing:
            self.preload(client)
            again = self._send(client, [calls[index] for index in missing])
            for index, result in zip(missing, again):
                results[index] = result
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    @staticmethod
    def _send(client: redis.Redis, calls: Sequence[ScriptCall]) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        return list(pipe.execute(raise_on_error=False))


def _take(pool: Any) -> Any:
    try:
        return pool.get_connection()
    except TypeError:  # redis-py before 5.3 wants the command's name
        return pool.get_connection("EVALSHA")


def _take_idle(idle: list[Any]) -> Any:
    """A connection kept out of the pool, checked as the pool checks the ones it hands
    out: one the server closed meanwhile (or with a reply nobody read) is reconnected."""
    try:
        connection = idle.pop()
    except IndexError:  # another thread took the last one meanwhile
        return None
    try:
        if connection.can_read():
            connection.disconnect()  # the next send connects it again
    except (redis.ConnectionError, OSError):
        connection.disconnect()
    return connection


def _give_back(pool: Any, idle: list[Any] | None, connection: Any, keep: int) -> None:
    if idle is not None and len(idle) < keep:
        idle.append(connection)
    else:
        pool.release(connection)


def _send(connection: Any, command: tuple[Any, ...]) -> None:
    """Pack (with hiredis when installed: the arguments are str, bytes and numbers) and
    send one command."""
    if _hiredis_pack is not None:
        try:
            packed = [_hiredis_pack(command)]
        except TypeError:  # an argument hiredis does not take: redis-py converts it
            packed = connection.pack_command(*command)
    else:
        packed = connection.pack_command(*command)
    connection.send_packed_command(packed)


def _forget_idle() -> None:
    """In a forked child: the idle connections are the parent's sockets."""
    for scripts in list(_ALL):
        scripts._idle = []


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_idle)


def _no_script(result: Any) -> bool:
    return isinstance(result, NoScriptError) or (
        isinstance(result, redis.ResponseError) and str(result).startswith("NOSCRIPT")
    )
