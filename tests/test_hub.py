"""zoo.hub against a real HTTP server on 127.0.0.1 (tests/hub_server.py), never a mocked client."""
from __future__ import annotations

import errno
import hashlib
import multiprocessing
import os
import random
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from hub_server import PayloadServer
from huggingface_hub import constants as hf_constants

from zoo import hub

PAYLOAD = random.Random(365).randbytes(300_000)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
PATH = "/mmdetection/v2.0/objects365/faster_rcnn_r50_fpn_16x4_1x_obj365v1-" + DIGEST[:8] + ".pth"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in (hub.MIRROR_ENV, hub.CACHE_ENV, "HF_HUB_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)  # huggingface-hub reads the env once, at import


@pytest.fixture
def server():
    with PayloadServer(files={PATH: PAYLOAD}) as s:
        yield s


def cache_files(root: Path) -> list[str]:
    """Every file under the cache except lock files, as relative paths."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".locks" not in p.parts)


def test_download_verifies_then_serves_from_cache_with_server_stopped(tmp_path, server):
    url = server.url(PATH)
    path = hub.fetch(url, sha256=DIGEST, cache_dir=tmp_path, progress=False)
    assert path == hub.cache_path(url, tmp_path)
    assert path.relative_to(tmp_path).parts[:2] == ("http", f"127.0.0.1_{url.split(':')[2].split('/')[0]}")
    assert path.read_bytes() == PAYLOAD
    assert cache_files(tmp_path) == [str(path.relative_to(tmp_path))]
    server.stop()
    assert hub.fetch(url, sha256=DIGEST, cache_dir=tmp_path, progress=False) == path
    assert len(server.get_requests(PATH)) == 1


def test_cache_dir_from_env(tmp_path, server, monkeypatch):
    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path / "envcache"))
    path = hub.fetch(server.url(PATH), sha256=DIGEST, progress=False)
    assert path.is_relative_to(tmp_path / "envcache") and path.read_bytes() == PAYLOAD


def test_corrupted_body_is_refused_and_leaves_nothing(tmp_path, server):
    server.corrupt.add(PATH)
    url = server.url(PATH)
    with pytest.raises(hub.ChecksumError) as err:
        hub.fetch(url, sha256=DIGEST, cache_dir=tmp_path, progress=False)
    message = str(err.value)
    bad = hashlib.sha256(PAYLOAD[: len(PAYLOAD) // 2] + bytes([PAYLOAD[len(PAYLOAD) // 2] ^ 0xFF])
                         + PAYLOAD[len(PAYLOAD) // 2 + 1:]).hexdigest()
    assert url in message and DIGEST in message and bad in message
    assert cache_files(tmp_path) == []


def test_cached_file_that_no_longer_verifies_is_downloaded_again(tmp_path, server):
    path = hub.fetch(server.url(PATH), sha256=DIGEST, cache_dir=tmp_path, progress=False)
    path.write_bytes(PAYLOAD[:-1] + b"x")  # bit rot, or someone edited the cache
    assert hub.fetch(server.url(PATH), sha256=DIGEST, cache_dir=tmp_path, progress=False).read_bytes() == PAYLOAD
    assert len(server.get_requests(PATH)) == 2


def test_dropped_connection_leaves_only_part_file_then_resumes_with_range(tmp_path, server):
    server.drop_once.add(PATH)
    url = server.url(PATH)
    final = hub.cache_path(url, tmp_path)
    with pytest.raises(hub.DownloadError, match=url):
        hub.fetch(url, sha256=DIGEST, cache_dir=tmp_path, progress=False)
    assert not final.exists()
    part = final.with_name(final.name + ".part")
    assert part.stat().st_size == len(PAYLOAD) // 2

    assert hub.fetch(url, sha256=DIGEST, cache_dir=tmp_path, progress=False).read_bytes() == PAYLOAD
    first, second = server.get_requests(PATH)
    assert first.range is None and first.body_bytes == len(PAYLOAD) // 2
    assert second.range == f"bytes={len(PAYLOAD) // 2}-" and second.status == 206
    assert first.body_bytes + second.body_bytes == len(PAYLOAD)
    assert cache_files(tmp_path) == [str(final.relative_to(tmp_path))]


def test_server_ignoring_range_gets_a_full_download(tmp_path, server):
    server.drop_once.add(PATH)
    server.ignore_range = True
    url = server.url(PATH)
    with pytest.raises(hub.DownloadError):
        hub.fetch(url, sha256=DIGEST, cache_dir=tmp_path, progress=False)
    assert hub.fetch(url, sha256=DIGEST, cache_dir=tmp_path, progress=False).read_bytes() == PAYLOAD
    second = server.get_requests(PATH)[1]
    assert second.range is not None and second.status == 200 and second.body_bytes == len(PAYLOAD)


def test_stale_part_file_larger_than_the_file_is_discarded(tmp_path, server):
    url = server.url(PATH)
    final = hub.cache_path(url, tmp_path)
    final.parent.mkdir(parents=True)
    final.with_name(final.name + ".part").write_bytes(b"\0" * (len(PAYLOAD) + 10))
    assert hub.fetch(url, sha256=DIGEST, cache_dir=tmp_path, progress=False).read_bytes() == PAYLOAD
    assert [r.status for r in server.get_requests(PATH)] == [416, 200]


def test_http_errors_and_refused_connections_raise_download_error(tmp_path, server):
    missing = server.url("/nope.pth")
    with pytest.raises(hub.DownloadError, match="HTTP 404") as err:
        hub.fetch(missing, cache_dir=tmp_path, progress=False)
    assert missing in str(err.value)
    url = server.url(PATH)
    server.stop()
    with pytest.raises(hub.DownloadError, match=url):
        hub.fetch(url, cache_dir=tmp_path, progress=False, timeout=2)
    assert cache_files(tmp_path) == []


def test_stalled_server_times_out_and_keeps_the_partial_download(tmp_path, server):
    server.throttle_s = 2.0  # the body comes in 8 pieces, 0.25 s apart
    url = server.url(PATH)
    with pytest.raises(hub.DownloadError, match="timed out"):
        hub.fetch(url, sha256=DIGEST, cache_dir=tmp_path, progress=False, timeout=0.1)
    final = hub.cache_path(url, tmp_path)
    assert not final.exists()
    assert 0 < final.with_name(final.name + ".part").stat().st_size < len(PAYLOAD)


def _fetch_in_process(barrier, results, url: str, sha256: str, cache_dir: str) -> None:
    barrier.wait(timeout=60)
    try:
        path = hub.fetch(url, sha256=sha256, cache_dir=cache_dir, progress=False)
        results.put(str(path))
    except Exception as e:  # report, so the parent sees why
        results.put(f"error: {e!r}")


def test_four_processes_download_once(tmp_path, server):
    server.throttle_s = 0.4  # long enough that all four are inside fetch while the first downloads
    url = server.url(PATH)
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_fetch_in_process, args=(barrier, results, url, DIGEST, str(tmp_path)))
             for _ in range(4)]
    for p in procs:
        p.start()
    paths = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=10)
    final = hub.cache_path(url, tmp_path)
    assert paths == [str(final)] * 4
    assert final.read_bytes() == PAYLOAD
    gets = server.get_requests(PATH)
    assert len(gets) == 1 and gets[0].body_bytes == len(PAYLOAD)
    assert cache_files(tmp_path) == [str(final.relative_to(tmp_path))]


def test_eight_hex_prefix_verifies(tmp_path, server):
    url = server.url(PATH)
    assert hub.fetch(url, sha256=DIGEST[:8].upper(), cache_dir=tmp_path, progress=False).read_bytes() == PAYLOAD
    wrong = f"{int(DIGEST[:8], 16) ^ 1:08x}"
    with pytest.raises(hub.ChecksumError, match=wrong):
        hub.fetch(url, sha256=wrong, cache_dir=tmp_path / "other", progress=False)


@pytest.mark.parametrize("bad", ["1234567", "xyz12345", DIGEST + "0", ""])
def test_malformed_digests_are_rejected_before_any_request(tmp_path, server, bad):
    if bad:
        with pytest.raises(ValueError, match="8 to 64 hex"):
            hub.fetch(server.url(PATH), sha256=bad, cache_dir=tmp_path)
    else:  # empty means "no digest", like None
        assert hub.fetch(server.url(PATH), sha256=bad, cache_dir=tmp_path, progress=False).is_file()
    assert len(server.get_requests(PATH)) == (0 if bad else 1)


def test_local_paths(tmp_path):
    local = tmp_path / "weights.pth"
    local.write_bytes(PAYLOAD)
    assert hub.fetch(str(local), sha256=DIGEST) == local
    assert hub.fetch(str(local), sha256=DIGEST[:8]) == local
    assert hub.fetch(str(local)) == local
    with pytest.raises(hub.ChecksumError, match=str(local)):
        hub.fetch(str(local), sha256="0" * 64)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        hub.fetch(str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="unsupported source"):
        hub.fetch("s3://bucket/weights.pth")


def test_mirror_env_rewrites_https_origin_to_local_server(tmp_path, server, monkeypatch):
    source = "https://download.openmmlab.com" + PATH
    monkeypatch.setenv(hub.MIRROR_ENV, server.origin + "/")
    path = hub.fetch(source, sha256=DIGEST, cache_dir=tmp_path, progress=False)
    assert path == tmp_path / "https" / "download.openmmlab.com" / PATH.lstrip("/")
    assert path.read_bytes() == PAYLOAD
    assert len(server.get_requests(PATH)) == 1


def test_mirror_with_base_path_and_parameter(tmp_path, server):
    server.files["/mirror/base" + PATH] = PAYLOAD
    source = "https://download.openmmlab.com" + PATH
    base = server.origin + "/mirror/base"
    assert hub.apply_mirror(source + "?x=1", base + "/") == base + PATH + "?x=1"
    hub.fetch(source, sha256=DIGEST, cache_dir=tmp_path, mirror=server.origin + "/mirror/base", progress=False)
    assert len(server.get_requests("/mirror/base" + PATH)) == 1 and not server.get_requests(PATH)
    with pytest.raises(ValueError, match="mirror"):
        hub.fetch(source, cache_dir=tmp_path, mirror="ftp://mirror", force=True)


def test_cache_layout_refuses_paths_that_escape(tmp_path):
    assert hub.cache_path("https://h.org/a/b.pth", tmp_path) == tmp_path / "https" / "h.org" / "a" / "b.pth"
    assert hub.cache_path("https://h.org:8443/b.pth?download=1", tmp_path).parent.name.startswith("query-")
    for url in ("https://h.org/a/../../b.pth", "https://h.org/a/%2e%2e/b.pth", "https://h.org/dir/", "https://h.org"):
        with pytest.raises(ValueError):
            hub.cache_path(url, tmp_path)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("hf://org/repo/model.safetensors", hub.HfSource("org/repo", "model.safetensors", None)),
        ("hf://org/repo/sub/dir/m.pth@v1.0", hub.HfSource("org/repo", "sub/dir/m.pth", "v1.0")),
        ("hf://org/repo/m.pth@refs/pr/3", hub.HfSource("org/repo", "m.pth", "refs/pr/3")),
        ("hf://org/repo/m.pth@" + "a" * 40, hub.HfSource("org/repo", "m.pth", "a" * 40)),
    ],
)
def test_parse_hf(source, expected):
    assert hub.parse_hf(source) == expected
    assert str(expected) == source


@pytest.mark.parametrize("source", ["hf://org/repo", "hf://org//file", "hf://org/repo/file@", "https://org/repo/f"])
def test_parse_hf_rejects(source):
    with pytest.raises(ValueError):
        hub.parse_hf(source)


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _populate_hf_cache(hf_cache: Path, repo_id: str, filename: str, data: bytes, ref: str = "main") -> Path:
    """Lay a file out the way huggingface-hub's cache does: blobs/<etag>, snapshots/<commit>/<file>, refs/<ref>."""
    repo_dir = hf_cache / ("models--" + repo_id.replace("/", "--"))
    blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    snapshot = repo_dir / "snapshots" / COMMIT / filename
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(os.path.relpath(blob, snapshot.parent))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / ref).write_text(COMMIT)
    return snapshot


def test_hf_offline_served_from_prepopulated_cache(tmp_path, monkeypatch):
    snapshot = _populate_hf_cache(tmp_path / "huggingface", "org/repo", "sub/m.pth", PAYLOAD)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    # the endpoint is a closed port: any network attempt would fail, so success proves none was made
    dead = "http://127.0.0.1:9"
    for source in ("hf://org/repo/sub/m.pth", "hf://org/repo/sub/m.pth@main", f"hf://org/repo/sub/m.pth@{COMMIT}"):
        path = hub.fetch(source, sha256=DIGEST[:8], cache_dir=tmp_path, mirror=dead, progress=False)
        assert path == snapshot and path.read_bytes() == PAYLOAD
    with pytest.raises(hub.ChecksumError, match="hf://org/repo/sub/m.pth"):
        hub.fetch("hf://org/repo/sub/m.pth", sha256="0" * 8, cache_dir=tmp_path, progress=False)
    with pytest.raises(hub.DownloadError, match="HF_HUB_OFFLINE"):
        hub.fetch("hf://org/repo/other.pth", cache_dir=tmp_path, progress=False)


def test_hf_cached_file_needs_no_network_even_when_online(tmp_path):
    snapshot = _populate_hf_cache(tmp_path / "huggingface", "org/repo", "m.pth", PAYLOAD)
    path = hub.fetch("hf://org/repo/m.pth", sha256=DIGEST, cache_dir=tmp_path, mirror="http://127.0.0.1:9",
                     progress=False)
    assert path == snapshot


def test_hf_mirror_is_the_hub_endpoint(tmp_path, server):
    """Our server plays the Hub at the mirror URL: huggingface-hub resolves and downloads the file from it."""
    resolve = "/org/repo/resolve/main/sub/m.pth"
    server.files[resolve] = PAYLOAD
    server.extra_headers[resolve] = {"X-Repo-Commit": COMMIT, "ETag": f'"{DIGEST}"'}
    path = hub.fetch("hf://org/repo/sub/m.pth@main", sha256=DIGEST, cache_dir=tmp_path, mirror=server.origin,
                     progress=False)
    assert path.read_bytes() == PAYLOAD
    assert path.is_relative_to(tmp_path / "huggingface" / "models--org--repo" / "snapshots" / COMMIT)
    assert server.get_requests(resolve)
    blob = path.resolve()
    blob.write_bytes(b"stale")  # the cached copy no longer verifies: downloaded again
    assert hub.fetch("hf://org/repo/sub/m.pth@main", sha256=DIGEST, cache_dir=tmp_path, mirror=server.origin,
                     progress=False).read_bytes() == PAYLOAD
    assert len(server.get_requests(resolve)) == 2
    origin = server.origin
    server.stop()
    assert hub.fetch("hf://org/repo/sub/m.pth@main", sha256=DIGEST, cache_dir=tmp_path, mirror=origin,
                     progress=False) == path


def test_hf_missing_file_raises_download_error(tmp_path, server):
    # (an unreachable endpoint also ends in DownloadError, after huggingface-hub's ~23 s of retries: too slow here)
    with pytest.raises(hub.DownloadError, match="hf://org/repo/m.pth") as err:
        hub.fetch("hf://org/repo/m.pth", cache_dir=tmp_path, mirror=server.origin, progress=False)
    assert server.origin in str(err.value)
    assert [r.status for r in server.served] == [404]


def test_upload_commits_the_file_and_returns_a_pinned_source(tmp_path, server):
    """Our server plays the Hub API (preupload + commit) at the mirror URL."""
    local = tmp_path / "model.safetensors"
    local.write_bytes(PAYLOAD[:5000])
    pinned = hub.upload(local, "hf://org/repo/weights/model.safetensors@main", mirror=server.origin)
    (commit,) = server.commits
    assert commit["repo"] == "org/repo" and commit["revision"] == "main"
    assert commit["files"] == {"weights/model.safetensors": PAYLOAD[:5000]}
    assert pinned == f"hf://org/repo/weights/model.safetensors@{commit['oid']}"
    with pytest.raises(FileNotFoundError):
        hub.upload(tmp_path / "missing.safetensors", "hf://org/repo/x.safetensors", mirror=server.origin)


def test_checksum_error_through_a_mirror_names_both_urls(tmp_path, server):
    server.corrupt.add(PATH)
    source = "https://download.openmmlab.com" + PATH
    with pytest.raises(hub.ChecksumError) as err:
        hub.fetch(source, sha256=DIGEST, cache_dir=tmp_path, mirror=server.origin, progress=False)
    assert source in str(err.value) and server.url(PATH) in str(err.value)
    assert cache_files(tmp_path) == []


def test_trickling_server_fails_at_the_deadline_then_the_next_fetch_resumes(tmp_path, server):
    server.throttle_s = 4.0  # 8 pieces 0.5 s apart: never silent for the 30 s socket timeout, but 4 s in all
    url = server.url(PATH)
    began = time.monotonic()
    with pytest.raises(hub.DownloadError, match="too slow: still running after the deadline of 1 s") as err:
        hub.fetch(url, sha256=DIGEST, cache_dir=tmp_path, progress=False, deadline=1.0)
    assert time.monotonic() - began < 2.5
    assert url in str(err.value) and hub.DEADLINE_ENV in str(err.value)
    final = hub.cache_path(url, tmp_path)
    kept = final.with_name(final.name + ".part").stat().st_size
    assert 0 < kept < len(PAYLOAD) and not final.exists()
    server.throttle_s = 0.0
    assert hub.fetch(url, sha256=DIGEST, cache_dir=tmp_path, progress=False).read_bytes() == PAYLOAD
    assert server.get_requests(PATH)[1].range == f"bytes={kept}-"


def test_minimum_rate_from_the_environment_fails_a_trickle(tmp_path, server, monkeypatch):
    server.throttle_s = 4.0  # ~75 kB/s
    url = server.url(PATH)
    monkeypatch.setenv(hub.MIN_RATE_ENV, "1e6")
    with pytest.raises(hub.DownloadError, match=r"too slow: \d+ bytes/s over the last \d\.\d s, below the minimum "
                                                r"of 1000000 bytes/s \(min_rate= or \$O365ZOO_DOWNLOAD_MIN_RATE\)"):
        hub.fetch(url, sha256=DIGEST, cache_dir=tmp_path, progress=False, timeout=0.6)  # rate measured over 0.6 s
    monkeypatch.setenv(hub.MIN_RATE_ENV, "fast")
    with pytest.raises(ValueError, match=hub.MIN_RATE_ENV):
        hub.fetch(url, cache_dir=tmp_path, progress=False)


def test_disk_too_small_for_the_announced_size_fails_and_removes_the_partial_file(tmp_path, server, monkeypatch):
    url = server.url(PATH)
    final = hub.cache_path(url, tmp_path)
    final.parent.mkdir(parents=True)
    final.with_name(final.name + ".part").write_bytes(PAYLOAD[:1000])  # an earlier partial download
    monkeypatch.setattr(hub.shutil, "disk_usage", lambda path: SimpleNamespace(free=5000))
    with pytest.raises(hub.NoSpaceError, match=f"not enough space in {final.parent}: the file needs {len(PAYLOAD)} "
                                               "bytes .* and 5000 bytes .* are free"):
        hub.fetch(url, sha256=DIGEST, cache_dir=tmp_path, progress=False)
    assert cache_files(tmp_path) == []


class _DiskFillsAfter:
    """A file open for writing on a disk with ``room`` bytes left: then it fails as a full disk does."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name: str):
        return getattr(self.f, name)


def test_disk_full_while_writing_removes_the_partial_file(tmp_path, server, monkeypatch):
    server.throttle_s = 0.4  # 8 writes of 37.5 kB: the third finds the disk full
    url = server.url(PATH)
    monkeypatch.setattr(hub, "open", lambda path, mode="r": _DiskFillsAfter(open(path, mode), 100_000)  # noqa: SIM115
                        if mode in ("wb", "ab") else open(path, mode), raising=False)  # noqa: SIM115  (hub closes it)
    with pytest.raises(hub.NoSpaceError, match=f"the file needs {len(PAYLOAD)} bytes") as err:
        hub.fetch(url, sha256=DIGEST, cache_dir=tmp_path, progress=False)
    assert url in str(err.value) and err.value.needed == len(PAYLOAD)
    assert isinstance(err.value.__cause__, OSError) and err.value.__cause__.errno == errno.ENOSPC
    assert cache_files(tmp_path) == []
