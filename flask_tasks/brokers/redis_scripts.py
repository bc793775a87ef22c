"""Loading the Redis broker's Lua scripts (``lua/*.lua``, one file per atomic command).

Each file opens with a comment listing its KEYS, ARGV and return value. Scripts whose KEYS
start with the core keys (see :meth:`.RedisKeys.core`) get ``lua/lib.lua``, the shared
helpers, prepended; Lua line numbers in their errors count from the top of ``lib.lua``.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

LUA = Path(__file__).with_name("lua")
#: Scripts that work on messages: their KEYS start with the core keys.
USES_LIB = (
    "publish",
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
        found[name] = library + source if name in USES_LIB else source
    return found


class RedisScripts:
    """The Lua commands, registered once on one client (EVALSHA; reloaded on NOSCRIPT)."""

    def __init__(self, client: redis.Redis, *, wake_publish: str = "") -> None:
        scripts = {
            name: client.register_script(source) for name, source in sources(wake_publish).items()
        }
        self.all = scripts
        self.publish = scripts["publish"]
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
        #: (sha, ``packed_as``) -> the EVALSHA command as sent (see :meth:`call`).
        self._packed: dict[tuple[str, Hashable], Any] = {}

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
        client's per-command bookkeeping (a third of a small call's client CPU): what a
        loop of ``delay()`` pays on every call. NOSCRIPT loads the script and runs it again
        (it ran nothing); a connection or timeout error drops the connection and is raised
        (the client is made with no retries: the callers retry).

        ``packed_as``: a name for this exact command (same keys and arguments), for calls
        made again and again (a worker's reserve): its bytes are packed once, not on every
        call (packing a reserve of 20 queues' keys costs more than the rest of the call)."""
        if client.connection is not None:  # a single-connection client: its own locking
            return script(keys, args, client)
        pool = client.connection_pool
        try:
            connection = pool.get_connection()
        except TypeError:  # redis-py before 5.3 wants the command's name
            connection = pool.get_connection("EVALSHA")  # type: ignore[call-arg,unused-ignore]
        try:
            try:
                if packed_as is None:
                    connection.send_command("EVALSHA", script.sha, len(keys), *keys, *args)  # type: ignore[no-untyped-call]
                else:
                    connection.send_packed_command(  # type: ignore[no-untyped-call]
                        self._packed_command(connection, script.sha, packed_as, keys, args)
                    )
                return connection.read_response()
            except NoScriptError:
                script.sha = client.script_load(script.script)
                connection.send_command("EVALSHA", script.sha, len(keys), *keys, *args)  # type: ignore[no-untyped-call]
                return connection.read_response()
        except redis.ResponseError:
            raise
        except BaseException:
            connection.disconnect()  # type: ignore[no-untyped-call]
            raise
        finally:
            pool.release(connection)

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
            packed = [b"".join(connection.pack_command("EVALSHA", sha, len(keys), *keys, *args))]
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


def _no_script(result: Any) -> bool:
    return isinstance(result, NoScriptError) or (
        isinstance(result, redis.ResponseError) and str(result).startswith("NOSCRIPT")
    )
