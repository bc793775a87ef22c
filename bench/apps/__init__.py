"""One no-op task per library, each module importable by that library's worker command.

Every module reads the Redis URL from ``BENCH_REDIS_URL`` (set by the harness), so the
workers and the producers of one run talk to the same throwaway server.
"""
