"""Logs carrying the id of the request being served: one JSON object per line for machines, or one readable line
per record on a terminal."""
from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName",
                                                                            "color_message"}  # uvicorn's ANSI copy


def _request_id(record: logging.LogRecord) -> str:
    return getattr(record, "request_id", None) or request_id.get()


def _extra(record: logging.LogRecord) -> dict:
    """The fields a call passed with ``extra=``."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and k != "request_id"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "request_id", ...extra fields}``, exceptions included as text."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": _request_id(record),
        }
        entry.update(_extra(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``12:00:01.234 INFO    serving: request method=POST ... request_id=...`` (local time; empty fields left out),
    the traceback on the lines below."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _extra(record)
        if (rid := _request_id(record)) != "-":
            fields["request_id"] = rid
        line = (f"{time.strftime('%H:%M:%S', time.localtime(record.created))}.{int(record.msecs):03d} "
                f"{record.levelname:<7} {record.name}: {record.getMessage()}")
        line += "".join(f" {k}={v}" for k, v in fields.items() if v != "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(level: str = "info", log_format: str = "auto") -> None:
    """Send the serving, uvicorn and root logs to stderr: ``json`` lines, ``text``, or ``auto``: text on a terminal,
    JSON otherwise."""
    text = log_format == "text" or (log_format == "auto" and sys.stderr.isatty())
    handler = logging.StreamHandler()
    handler.setFormatter(TextFormatter() if text else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # the app logs each request itself, with its id
