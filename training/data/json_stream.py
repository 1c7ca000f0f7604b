"""One sequential read of a large JSON object (a COCO annotation file), yielding its top-level lists in batches.

The Objects365 train file is 1.66 GB with 10M annotation records: parsed whole with :func:`json.load` it needs
several GB; streamed with ijson it costs one full pass per list. Here the standard library's C decoder reads the file
once in chunks: each chunk of a list is cut at its last ``},`` and decoded as one JSON array (``[ ... }]``), which is
valid JSON only if the cut fell between two records (inside a string or a nested object the brackets or quotes would
not balance) or after the list's own ``]`` (the decoder stops there); when it is not, records are decoded one at a
time with ``raw_decode``. Memory: one chunk of text plus one batch of records. ``benchmarks/bench_stats.py`` times
the index build that uses it.
"""
from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from pathlib import Path

CHUNK_CHARS = 1 << 24  # characters of text read at a time (one batch of records decodes from at most this much)
_WS = " \t\n\r"
_NUMBER_CHARS = "0123456789.eE+-"
_DECODER = json.JSONDecoder()


class JsonStreamError(ValueError):
    """The file is not a JSON object, or not valid JSON; the message says where."""


def iter_lists(path: str | Path, chunk_chars: int = CHUNK_CHARS) -> Iterator[tuple[str, list]]:
    """``(key, records)`` for every top-level key of the JSON object in ``path`` whose value is a list, in file
    order, each list in one or more consecutive batches (an empty list yields nothing); other values are skipped.

    The cyclic garbage collector is off until the iteration ends (the caller's code between batches included):
    decoding allocates millions of dicts and lists, and each collection would walk the ones still alive (a third of
    the decoding time); records hold no cycles, so reference counting frees them all the same.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        with open(path, encoding="utf-8-sig") as f:  # a byte-order mark, if any, is not content
            yield from _Reader(f, chunk_chars).lists()
    finally:
        if enabled:
            gc.enable()


class _Reader:
    def __init__(self, f, chunk_chars: int) -> None:
        self.f, self.chunk = f, chunk_chars
        self.buf, self.pos, self.eof = "", 0, False
        self.dropped = 0  # characters of the file before ``buf``
        self.no_cut_before = 0  # file offset: records before it are decoded one at a time (a cut failed there)

    def lists(self) -> Iterator[tuple[str, list]]:
        if self._peek() != "{":
            raise JsonStreamError("the top level is not a JSON object")
        self.pos += 1
        if self._peek() == "}":
            self.pos += 1
            self._end()
            return
        while True:
            key = self._value()
            if not isinstance(key, str):
                raise self._error("expected a key (a string)")
            if self._peek() != ":":
                raise self._error("expected ':' after a key")
            self.pos += 1
            if self._peek() == "[":
                self.pos += 1
                for batch in self._elements():
                    yield key, batch
            else:
                self._value()
            sep = self._peek()
            self.pos += 1
            if sep == "}":
                self._end()
                return
            if sep != ",":
                raise self._error("expected ',' or '}' after a value")

    def _elements(self) -> Iterator[list]:
        """The elements of the list whose '[' was just read, in batches; consumes the closing ']'."""
        if self._peek() == "]":
            self.pos += 1
            return
        while True:
            batch = self._batch()
            if batch:
                yield batch
            else:  # no batch cut: one element
                yield [self._value()]
            sep = self._peek()
            self.pos += 1
            if sep == "]":
                return
            if sep != ",":
                raise self._error("expected ',' or ']' in a list")

    def _batch(self) -> list:
        """The records up to the last ``},`` in the buffer, decoded at once, if that cut falls between records; when
        the list ends before the cut, the rest of the list (the position is left on its closing ``]``)."""
        if len(self.buf) - self.pos < self.chunk // 2 and not self.eof:
            self._fill()
        if self.dropped + self.pos < self.no_cut_before:
            return []
        cut = last = self.buf.rfind("},", self.pos)
        for _ in range(2):  # the last '},' may close a nested object of an unfinished record: try the one before
            if cut <= self.pos:
                break
            text = "[" + self.buf[self.pos:cut + 1] + "]"
            try:
                batch, end = _DECODER.raw_decode(text)
            except json.JSONDecodeError:
                cut = self.buf.rfind("},", self.pos, cut)
                continue
            # end < len(text): the list's own ']' came first, at text[end - 1] = buf[pos + end - 2]
            self.pos = cut + 1 if end == len(text) else self.pos + end - 2
            return batch
        # decode one record at a time up to the failed cut (or the buffer's end), rather than retry cuts per record
        self.no_cut_before = self.dropped + (last + 1 if last > self.pos else len(self.buf))
        return []

    def _value(self):
        """One complete JSON value at the position (reading more text until it is complete)."""
        self._peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if self.eof:
                    raise self._error(exc.msg, exc.pos) from None
                self._fill()
                continue
            # a number cut by the buffer's end decodes short: complete only if a character that ends a number follows
            if self.eof or (end < len(self.buf) and self.buf[end] not in _NUMBER_CHARS):
                self.pos = end
                return value
            self._fill()

    def _peek(self) -> str:
        """The next non-space character (not consumed); '' at the end of the file."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WS:
                self.pos += 1
            if self.pos < len(self.buf) or self.eof:
                return self.buf[self.pos:self.pos + 1]
            self._fill()

    def _fill(self) -> None:
        text = self.f.read(self.chunk)
        self.dropped += self.pos
        self.buf, self.pos = self.buf[self.pos:] + text, 0
        self.eof = not text

    def _end(self) -> None:
        if self._peek():
            raise self._error("extra data after the top-level object")

    def _error(self, what: str, at: int | None = None) -> JsonStreamError:
        at = self.pos if at is None else at
        return JsonStreamError(f"not valid JSON ({what} near {self.buf[max(0, at - 20):at + 20]!r})")
