"""JSON logs: one object per line on stderr, so `docker logs` output can be shipped and queried as is.

The access log (one line per request, see middleware.RequestContext) replaces uvicorn's own, which is switched off
at start so a request is not logged twice. Request and response bodies and the Access JWT are never logged.
"""

from __future__ import annotations

import json
import logging
import sys
import time

# Attributes every LogRecord has; anything else passed through `extra=` is emitted as a field.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """{"ts", "level", "logger", "msg", ...fields}. A dict passed as the message is merged in as the fields
    (the access log does that: it is the hot path, and this skips logging's `extra=` machinery)."""

    _second = -1
    _stamp = ""

    def _ts(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # strftime once per second, not once per line
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": self._ts(record.created), "level": record.levelname.lower(), "logger": record.name}
        if isinstance(record.msg, dict):
            entry.update(record.msg)
        else:
            entry["msg"] = record.getMessage()
            for key, value in record.__dict__.items():
                if key not in _STANDARD:
                    entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


def setup_logging(level: str) -> None:
    # The access log is on every request's path: do not collect what JsonFormatter never prints (the caller's file
    # and line, thread, process), per the logging HOWTO's "Optimization" section
    # (docs.python.org/3/howto/logging.html#optimization).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Our access log line carries the request id, route and upstream timing; uvicorn's would duplicate it.
    logging.getLogger("uvicorn.access").disabled = True
