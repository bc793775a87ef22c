"""How ``flask worker`` logs: one stderr handler per process, Celery's line format."""

from __future__ import annotations

import logging

LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"


def configure_logging(level: str) -> None:
    """Log to stderr the way ``flask worker`` prints, once per process."""
    root = logging.getLogger()
    if not any(getattr(handler, "_flask_tasks", False) for handler in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler._flask_tasks = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    logging.getLogger("flask_tasks").setLevel(level.upper())


#: Longest text from task data (arguments, results, exception messages, tracebacks) one
#: log line shows; the rest is cut, saying how much.
MAX_LOGGED = 2000

_CONTROL = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)}
_CONTROL.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
_CONTROL.update({code: f"\\x{code:02x}" for code in range(0x80, 0xA0)})


def loggable(value: object, limit: int = MAX_LOGGED, *, lines: bool = False) -> str:
    """``value`` as text safe for one log line: control characters (CR, LF, ANSI escapes)
    escaped so that task data cannot forge log lines or colour a terminal, and at most
    ``limit`` characters. With ``lines`` (a traceback), every line is kept and indented,
    so that no line of it can pass for a log line of its own."""
    try:
        text = value if isinstance(value, str) else repr(value)
    except Exception as error:  # a __repr__ that raises must not lose the log line
        text = f"<unprintable {type(value).__name__}: {type(error).__name__}>"
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text) - limit} more characters)"
    if lines:
        return "\n".join("  " + part.translate(_CONTROL) for part in text.split("\n"))
    return text.translate(_CONTROL)
