"""Weights over the network: resolve a source to a verified local file, and publish files to the Hugging Face Hub.

The only module of ``zoo`` that opens connections. Sources:

- ``hf://org/repo/path/to/file[@revision]``: huggingface-hub's ``hf_hub_download`` and its cache (shared with every
  other HF tool; ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` behave as huggingface-hub defines them);
- ``https://...`` / ``http://...``: our downloader, cached under ``<cache>/<scheme>/<host>/<path>``;
- anything else: a local path, which must exist.

Offline (``offline=True``, ``$O365ZOO_OFFLINE`` or ``$HF_HUB_OFFLINE`` set to 1): no connection is attempted; a
cached file that verifies is used, anything else raises :class:`OfflineError` naming where the file was looked for.

Cached files are trusted by re-hashing, not by a sidecar record: sha256 runs at ~1.7 GB/s on one core here (a 170 MB
checkpoint costs ~0.1 s, less than deserialising it), and re-hashing also catches files edited, truncated or bit-rotted
after they were written, and accepts files an air-gapped user copies into the cache layout by hand. A cached file with
no expected digest is trusted because the downloader only ever renames a complete download to the final path.

Limits of an http(s) download (each an argument of :func:`fetch`, else an environment variable, else the default):

- ``timeout`` (30 s): for each socket operation; a server silent that long fails the download;
- ``deadline`` (``$O365ZOO_DOWNLOAD_DEADLINE``, 3600 s): for the whole download, connection included;
- ``min_rate`` (``$O365ZOO_DOWNLOAD_MIN_RATE``, 10000 bytes/s): the least average rate over every ``timeout``
  seconds, so a server that trickles bytes fails too.

0 turns ``deadline`` or ``min_rate`` off; both are checked as bytes arrive, so a silent server is caught by
``timeout``. A download stopped by a limit or the network keeps its ``.part`` file, and the next fetch resumes it; one
the disk cannot hold (announced size above the free space, or ENOSPC while writing) removes it and says how much space
it needed.
"""
from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock
from tqdm.auto import tqdm

from .vocabulary import CACHE_ENV, cache_root

MIRROR_ENV = "O365ZOO_MIRROR"
OFFLINE_ENV = "O365ZOO_OFFLINE"
DEADLINE_ENV = "O365ZOO_DOWNLOAD_DEADLINE"
MIN_RATE_ENV = "O365ZOO_DOWNLOAD_MIN_RATE"
TIMEOUT_S = 30.0  # seconds per socket operation (connect, each read), not for the whole download
DEADLINE_S = 3600.0  # seconds for a whole download
MIN_RATE = 10_000.0  # bytes per second, averaged over every TIMEOUT_S
_CHUNK = 1 << 20
_HEX = re.compile(r"[0-9a-f]{8,64}")
_USER_AGENT = "objects365-zoo (+urllib)"
_TRUE = {"1", "ON", "YES", "TRUE"}


class HubError(RuntimeError):
    """A source could not be resolved to a verified local file."""

    path: Path | None = None  # where an http(s) source's file goes in the cache (a fix: copy it there, go offline)


class DownloadError(HubError):
    """The network failed us (connection, HTTP status, truncated body)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"download of {url} failed: {reason}")
        self.url = url


class OfflineError(DownloadError):
    """Downloads are off and the file is not in the cache."""

    def __init__(self, source: str, looked_in: Path) -> None:
        HubError.__init__(self, f"{source} is not in the cache (looked in {looked_in}) and downloads are off "
                                f"(${OFFLINE_ENV}, $HF_HUB_OFFLINE or offline=True)")
        self.url, self.looked_in = source, looked_in


class NoSpaceError(HubError):
    """The cache's disk cannot hold the download; its partial file was removed."""

    def __init__(self, url: str, folder: Path, needed: int | None, free: int) -> None:
        size = f"needs {_size(needed)}" if needed is not None else "announced no size"
        super().__init__(f"download of {url} failed: not enough space in {folder}: the file {size} and "
                         f"{_size(free)} are free (free some space or move the cache with ${CACHE_ENV})")
        self.url, self.folder, self.needed, self.free = url, folder, needed, free


class ChecksumError(HubError):
    """The bytes received are not the bytes published."""

    def __init__(self, url: str, expected: str, actual: str) -> None:
        super().__init__(f"sha256 mismatch for {url}: expected {expected}, got {actual}")
        self.url, self.expected, self.actual = url, expected, actual


@dataclass(frozen=True)
class HfSource:
    """An ``hf://org/repo/path/to/file@revision`` source; ``revision`` None means the repo's default branch."""

    repo_id: str
    filename: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"hf://{self.repo_id}/{self.filename}" + (f"@{self.revision}" if self.revision else "")


def parse_hf(source: str) -> HfSource:
    """Split ``hf://org/repo/path/to/file[@revision]``; the revision follows the last ``@`` and may hold ``/``."""
    if not source.startswith("hf://"):
        raise ValueError(f"not an hf:// source: {source!r}")
    rest = source[len("hf://"):]
    if "@" in rest:
        rest, _, revision = rest.rpartition("@")
        if not revision:
            raise ValueError(f"empty revision after '@' in {source!r}")
    else:
        revision = None
    parts = rest.split("/")
    if len(parts) < 3 or not all(parts):
        raise ValueError(f"expected hf://org/repo/path/to/file[@revision], got {source!r}")
    return HfSource(repo_id="/".join(parts[:2]), filename="/".join(parts[2:]), revision=revision)


def normalize_sha256(sha256: str) -> str:
    """Lower-case a full digest or a prefix of at least 8 hex digits; anything else is an error."""
    digest = sha256.strip().lower()
    if not _HEX.fullmatch(digest):
        raise ValueError(f"sha256 must be 8 to 64 hex digits (a digest or its prefix), got {sha256!r}")
    return digest


def sha256_file(path: str | Path) -> str:
    """Full hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def cache_path(url: str, cache_dir: str | Path | None = None) -> Path:
    """Where the file of ``url`` lives in the cache: ``<cache>/<scheme>/<host[_port]>/<path>``.

    A query string (``?download=1``) adds a folder named by its hash, so two queries never share a file.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    segments = [s for s in urllib.parse.unquote(parts.path).split("/") if s]
    if not segments or url.endswith("/"):
        raise ValueError(f"URL names no file: {url!r}")
    if any(s in (".", "..") or "\\" in s for s in segments):
        raise ValueError(f"URL path escapes the cache: {url!r}")
    host = parts.hostname + (f"_{parts.port}" if parts.port else "")
    if parts.query:
        segments.insert(-1, "query-" + hashlib.sha256(parts.query.encode()).hexdigest()[:12])
    return cache_root(cache_dir).joinpath(parts.scheme, host, *segments)


def apply_mirror(url: str, mirror: str | None) -> str:
    """Replace the scheme and host of an http(s) ``url`` with the ``mirror`` base URL, keeping path and query."""
    if not mirror:
        return url
    base = urllib.parse.urlsplit(mirror)
    if base.scheme not in ("http", "https") or not base.netloc:
        raise ValueError(f"mirror must be an http(s) base URL, got {mirror!r}")
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(
        (base.scheme, base.netloc, base.path.rstrip("/") + parts.path, parts.query, "")
    )


def offline_mode() -> bool:
    """Whether ``$O365ZOO_OFFLINE`` or ``$HF_HUB_OFFLINE`` turns downloads off (1, on, yes or true)."""
    return any(os.environ.get(name, "").upper() in _TRUE for name in (OFFLINE_ENV, "HF_HUB_OFFLINE"))


def fetch(
    source: str,
    *,
    sha256: str | None = None,
    cache_dir: str | Path | None = None,
    mirror: str | None = None,
    offline: bool | None = None,
    progress: bool = True,
    force: bool = False,
    timeout: float = TIMEOUT_S,
    deadline: float | None = None,
    min_rate: float | None = None,
) -> Path:
    """Resolve ``source`` to a local file whose sha256 matches ``sha256`` (a full digest or a prefix of >= 8 hex).

    ``mirror`` (default ``$O365ZOO_MIRROR``) replaces the origin of http(s) sources and is the Hub endpoint of hf://
    sources. A cached file that verifies is returned without any network call; ``force`` downloads again.
    ``offline`` (default :func:`offline_mode`) forbids any connection: the cached file or :class:`OfflineError`.
    hf:// files go to huggingface-hub's cache, or to ``<cache_dir>/huggingface`` when ``cache_dir`` is given.
    ``timeout``, ``deadline`` (default ``$O365ZOO_DOWNLOAD_DEADLINE``, else 3600 s) and ``min_rate`` (bytes/s,
    default ``$O365ZOO_DOWNLOAD_MIN_RATE``, else 10000) limit an http(s) download (module docstring; 0: no limit).
    Raises :class:`ChecksumError` (wrong bytes), :class:`DownloadError` (network, limits; :class:`OfflineError`
    when offline), :class:`NoSpaceError` (disk full), FileNotFoundError (local path).
    """
    expected = normalize_sha256(sha256) if sha256 else None
    if mirror is None:
        mirror = os.environ.get(MIRROR_ENV) or None
    offline = offline_mode() if offline is None else offline
    if offline and force:
        raise ValueError("force downloads again, which offline forbids")
    if source.startswith("hf://"):
        return _fetch_hf(parse_hf(source), expected, cache_dir=cache_dir, mirror=mirror, offline=offline,
                         progress=progress, force=force)
    if source.startswith(("http://", "https://")):
        if offline:
            return _cached_offline(source, cache_path(source, cache_dir), expected)
        limits = _setting(deadline, DEADLINE_ENV, DEADLINE_S), _setting(min_rate, MIN_RATE_ENV, MIN_RATE)
        return _fetch_url(source, expected, cache_dir=cache_dir, mirror=mirror, progress=progress, force=force,
                          pace=_Pace(timeout, *limits))
    if "://" in source:
        raise ValueError(f"unsupported source {source!r}: use hf://, https://, http:// or a local path")
    return _fetch_local(Path(source).expanduser(), expected)


def upload(path: str | Path, dest: str, *, commit_message: str | None = None, mirror: str | None = None) -> str:
    """Upload ``path`` to ``hf://org/repo/path/in/repo[@branch]``; return the hf:// source pinned to the new commit.

    Credentials come from huggingface-hub (``HF_TOKEN`` or ``hf auth login``); ``mirror`` is the Hub endpoint.
    """
    from huggingface_hub import HfApi

    target = parse_hf(dest)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"nothing to upload: {path} is not a file")
    info = HfApi(endpoint=mirror or None).upload_file(
        path_or_fileobj=str(path),
        path_in_repo=target.filename,
        repo_id=target.repo_id,
        revision=target.revision,
        commit_message=commit_message or f"Upload {target.filename}",
    )
    return str(HfSource(target.repo_id, target.filename, info.oid))


def _matches(actual: str, expected: str | None) -> bool:
    return expected is None or actual.startswith(expected)


def _fetch_local(path: Path, expected: str | None) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if expected is not None and not _matches(actual := sha256_file(path), expected):
        raise ChecksumError(str(path), expected, actual)
    return path


def _cached_offline(url: str, path: Path, expected: str | None) -> Path:
    """The cached file of ``url`` without any connection; a file that does not verify is left where it is."""
    if not path.is_file():
        raise OfflineError(url, path)
    if expected is not None and not _matches(actual := sha256_file(path), expected):
        raise ChecksumError(str(path), expected, actual)
    return path


def _fetch_url(
    url: str, expected: str | None, *, cache_dir: str | Path | None, mirror: str | None, progress: bool, force: bool,
    pace: _Pace,
) -> Path:
    final = cache_path(url, cache_dir)
    if not force and _cached(final, expected):
        return final
    root = cache_root(cache_dir)
    lock = root / ".locks" / final.relative_to(root).with_name(final.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock):
        if not force and _cached(final, expected):  # another process finished while we waited
            return final
        if final.exists() and not force:  # present but not the published bytes: never hand it out again
            final.unlink()
        remote = apply_mirror(url, mirror)
        part = final.with_name(final.name + ".part")
        pace.start()
        try:
            actual = _download(remote, part, progress, pace)
        except DownloadError as e:
            e.path = final
            raise
        if expected is not None and not actual.startswith(expected):
            part.unlink()
            raise ChecksumError(url if remote == url else f"{url} (from {remote})", expected, actual)
        os.replace(part, final)
    return final


def _cached(path: Path, expected: str | None) -> bool:
    return path.is_file() and (expected is None or _matches(sha256_file(path), expected))


class _Pace:
    """The limits of one download: ``timeout`` per socket operation, ``deadline`` seconds in all, and at least
    ``min_rate`` bytes/s over every ``timeout`` seconds (0: no deadline, no minimum rate)."""

    def __init__(self, timeout: float, deadline: float, min_rate: float) -> None:
        self.timeout, self.deadline, self.min_rate = timeout, deadline, min_rate
        self.start()

    def start(self) -> None:
        self.started = self.window_start = time.monotonic()
        self.window_bytes = 0

    def socket_timeout(self) -> float:
        """``timeout``, shortened to what is left of the deadline."""
        if not self.deadline:
            return self.timeout
        return max(0.001, min(self.timeout, self.started + self.deadline - time.monotonic()))

    def check(self, url: str, part: Path, received: int) -> None:
        """Account for ``received`` more bytes; raise :class:`DownloadError` when a limit is broken."""
        now = time.monotonic()
        self.window_bytes += received
        if self.deadline and now - self.started > self.deadline:
            raise self._too_slow(url, part, f"still running after the deadline of {self.deadline:g} s (deadline= "
                                            f"or ${DEADLINE_ENV})")
        elapsed = now - self.window_start
        if self.min_rate and elapsed >= self.timeout:
            if self.window_bytes / elapsed < self.min_rate:
                raise self._too_slow(url, part, f"{self.window_bytes / elapsed:.0f} bytes/s over the last "
                                                f"{elapsed:.1f} s, below the minimum of {self.min_rate:.0f} bytes/s "
                                                f"(min_rate= or ${MIN_RATE_ENV})")
            self.window_start, self.window_bytes = now, 0

    @staticmethod
    def _too_slow(url: str, part: Path, reason: str) -> DownloadError:
        return DownloadError(url, f"too slow: {reason}; the bytes received stay in {part} and the next fetch "
                                  "resumes from them")


def _setting(value: float | None, env: str, default: float) -> float:
    """``value``, else the number in ``$env``, else ``default``."""
    if value is not None:
        return value
    text = os.environ.get(env, "").strip()
    try:
        return float(text) if text else default
    except ValueError:
        raise ValueError(f"${env} must be a number, got {text!r}") from None


def _download(url: str, part: Path, progress: bool, pace: _Pace) -> str:
    """Download ``url`` into ``part``, resuming what is there; return the full sha256 of the complete file.

    On a network failure or a broken ``pace`` the bytes received so far stay in ``part`` for the next call to
    resume; when the disk cannot hold the file, ``part`` is removed (:class:`NoSpaceError`).
    """
    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=pace.socket_timeout())
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # the partial file is not a prefix of what is served now
            part.unlink()
            return _download(url, part, progress, pace)
        raise DownloadError(url, f"HTTP {e.code} {e.reason}") from e
    except (OSError, http.client.HTTPException) as e:
        raise DownloadError(url, _reason(e)) from e

    digest = hashlib.sha256()
    with response:
        mode, kept = _resume(url, part, start, response, digest)
        length = response.headers.get("Content-Length")
        total = kept + int(length) if length and length.isdigit() else None
        # appending needs total - start more bytes; rewriting needs total, less the start bytes it truncates
        if total is not None and total - start > shutil.disk_usage(part.parent).free:
            raise _no_space(url, part, total)
        bar = tqdm(total=total, initial=kept, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=Path(part.name).stem, disable=not progress, leave=False)
        try:
            with bar, open(part, mode) as f:
                while chunk := response.read1(_CHUNK):  # what has arrived: a stall loses nothing
                    f.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
                    pace.check(url, part, len(chunk))
                f.flush()
                os.fsync(f.fileno())
        except (OSError, http.client.HTTPException) as e:
            if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
                raise _no_space(url, part, total) from e
            if isinstance(e, TimeoutError):  # a read cut short by the deadline: say so
                pace.check(url, part, 0)
            raise DownloadError(url, f"{_reason(e)} after {part.stat().st_size} bytes") from e
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(url, f"received {size} of {total} bytes")
    return digest.hexdigest()


def _resume(url: str, part: Path, start: int, response: http.client.HTTPResponse, digest: hashlib._Hash
            ) -> tuple[str, int]:
    """``(file mode, bytes kept)``: append to ``part`` when the server resumed at ``start`` (``digest`` then holds
    the kept bytes), else rewrite it (no partial file, or the server ignored Range and sends the whole body)."""
    if response.status != 206:
        return "wb", 0
    content_range = response.headers.get("Content-Range")
    if not start or _range_start(content_range) != start:
        part.unlink(missing_ok=True)
        raise DownloadError(url, f"answered {content_range!r} to a request for bytes {start}-")
    with open(part, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return "ab", start


def _no_space(url: str, part: Path, total: int | None) -> NoSpaceError:
    """Remove ``part``; the error says what the file needs and what is free then."""
    part.unlink(missing_ok=True)
    return NoSpaceError(url, part.parent, total, shutil.disk_usage(part.parent).free)


def _range_start(content_range: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-", content_range or "")
    return int(match.group(1)) if match else None


def _size(n: int) -> str:
    return f"{n} bytes ({tqdm.format_sizeof(n, 'B')})"


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return f"{type(error).__name__}: {error}"


class _SilentTqdm(tqdm):  # type: ignore[type-arg]  # tqdm's stubs are generic in the iterable; this one has none
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def _fetch_hf(
    src: HfSource, expected: str | None, *, cache_dir: str | Path | None, mirror: str | None, offline: bool,
    progress: bool, force: bool,
) -> Path:
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    hf_cache = Path(cache_dir).expanduser() / "huggingface" if cache_dir else None

    def download(*, local_files_only: bool = False, force_download: bool = False) -> str:
        return hf_hub_download(src.repo_id, src.filename, revision=src.revision, endpoint=mirror or None,
                               cache_dir=hf_cache, tqdm_class=None if progress else _SilentTqdm,
                               local_files_only=local_files_only, force_download=force_download)

    offline = offline or constants.is_offline_mode()  # huggingface-hub read $HF_HUB_OFFLINE at import
    cached = None
    if not force:  # a cached file that verifies is used without any network call, whatever the revision names
        try:
            cached = download(local_files_only=True)
        except LocalEntryNotFoundError:
            if offline:
                raise OfflineError(str(src), hf_cache or Path(constants.HF_HUB_CACHE)) from None
        else:
            if expected is None or _matches(actual := sha256_file(cached), expected):
                return Path(cached)
            if offline:
                raise ChecksumError(str(src), expected, actual)
    try:  # a cached file that failed verification is downloaded again
        path = download(force_download=force or cached is not None)
    except (HfHubHTTPError, EntryNotFoundError, OSError) as e:
        where = f" via {mirror}" if mirror else ""
        raise DownloadError(str(src), f"{type(e).__name__}{where}: {e}") from e
    if expected is not None and not _matches(actual := sha256_file(path), expected):
        raise ChecksumError(str(src), expected, actual)
    return Path(path)
