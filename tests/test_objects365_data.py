"""python -m training data objects365 against a local HTTP server (tests/hub_server.py) serving the official layout
with small generated archives: downloads resumed, a corrupt archive refused, missing and mis-sized images reported,
name fixes, and subsets whose counts are worked out by hand below."""
from __future__ import annotations

import io
import json
import tarfile
import urllib.parse
import zipfile
from pathlib import Path

import pytest
from hub_server import PayloadServer
from PIL import Image

from training.cli import main
from training.data import objects365 as o365
from zoo import hub
from zoo.categories import OBJECTS365_V2, fix_name, normalize_name

CATEGORIES = [{"id": 1, "name": "Person"}, {"id": 2, "name": "Moniter/TV"}, {"id": 3, "name": "Bakset"},
              {"id": 4, "name": "Table Tennis "}]  # Person and Moniter/TV map into COCO-80 (person, tv)
# image id -> (category ids of its boxes); image 5 is in no archive, image 8's file is 30x40 where the JSON says 40x30
BOXES = {1: [1, 3], 2: [3], 3: [2, 2], 4: [4], 5: [1], 6: [1, 4], 7: [3], 8: [2]}


def _listed(i: int) -> str:
    return f"images/v1/patch0/objects365_v1_{i:08d}.jpg" if i <= 5 else f"images/v2/patch16/objects365_v2_{i:08d}.jpg"


def _jpeg(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (90, 120, 150)).save(buf, "JPEG")
    return buf.getvalue()


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _annotations() -> dict:
    images = [{"id": i, "file_name": _listed(i), "width": 40, "height": 30, "license": 1} for i in BOXES]
    anns, k = [], 0
    for image_id, cats in BOXES.items():
        for c in cats:
            k += 1
            anns.append({"id": k, "image_id": image_id, "category_id": c, "bbox": [1.0, 2.0, 10.0, 8.0], "area": 80.0,
                         "iscrowd": 0})
    return {"images": images, "annotations": anns, "categories": CATEGORIES, "licenses": [{"id": 1, "name": "x"}]}


def _path(url: str) -> str:
    return urllib.parse.urlsplit(url).path


def _site(split: str) -> dict[str, bytes]:
    """URL path -> bytes of every official file of ``split``: images 1-4 in the first archive (the JSON's folders),
    6-8 in the second, a zip, under another folder than the JSON says; every other archive empty."""
    first = _tar_gz({_listed(i): _jpeg((40, 30)) for i in (1, 2, 3, 4)})
    second = _zip({f"patch16/objects365_v2_{i:08d}.jpg": _jpeg((30, 40) if i == 8 else (40, 30)) for i in (6, 7, 8)})
    urls = o365.patch_urls(split)
    files = {_path(u): _tar_gz({}) for u in urls}
    files[_path(urls[0])], files[_path(urls[16])] = first, second
    doc = json.dumps(_annotations()).encode()
    json_name = f"zhiyuan_objv2_{split}.json"
    files[_path(o365.annotation_url(split))] = doc if split == "val" else _tar_gz({json_name: doc})
    return files


@pytest.fixture
def server(monkeypatch):
    monkeypatch.delenv(hub.OFFLINE_ENV, raising=False)
    with PayloadServer(files=_site("val")) as s:
        monkeypatch.setenv(hub.MIRROR_ENV, s.origin)  # restored after the test: the CLI sets it from --mirror
        yield s


def _load(path: str) -> dict:
    return json.loads(Path(path).read_text())


def test_download_check_and_subsets_counted_by_hand(tmp_path, server):
    result, written = o365.prepare(tmp_path, "val", mirror=server.origin, subsets=o365.SUBSETS, sample_size=3,
                                   progress=False)
    assert result.missing == [_listed(5)]
    assert len(result.mismatched) == 1 and result.mismatched[0].startswith(_listed(8))
    assert "listed 40x30, file 30x40" in result.mismatched[0] and not result.complete
    # usable images 1, 2, 3, 4, 6, 7 (9 boxes); COCO-80 boxes: 1 on image 1, 2 on 3, 1 on 6; the others: 5 boxes
    counts = {name: (info["images"], info["boxes"]) for name, info in written.items()}
    assert counts["full"] == (6, 9)
    assert counts["coco80"] == (3, 4)
    assert counts["non-coco80"] == (5, 5)
    coco = _load(written["coco80"]["path"])
    assert sorted(im["id"] for im in coco["images"]) == [1, 3, 6]
    assert sorted(a["category_id"] for a in coco["annotations"]) == [1, 1, 2, 2]
    assert [c["name"] for c in coco["categories"]] == [c["name"] for c in CATEGORIES]  # no --fix-names
    full = _load(written["full"]["path"])
    names = {im["id"]: im["file_name"] for im in full["images"]}
    assert names[1] == _listed(1) and names[6] == "patch16/objects365_v2_00000006.jpg"  # where the file was found
    assert all((tmp_path / "val" / name).is_file() for name in names.values())
    assert full["images"][0]["license"] == 1  # records are copied whole
    sample = _load(written["sample"]["path"])
    picked = [im["id"] for im in sample["images"]]
    assert len(picked) == 3 and set(picked) <= {1, 2, 3, 4, 6, 7}
    assert counts["sample"] == (3, sum(len(BOXES[i]) for i in picked))
    assert {a["image_id"] for a in sample["annotations"]} <= set(picked)
    # archives are extracted once and removed; the val JSON sits in annotations/
    assert not list((tmp_path / "downloads").rglob("*.tar.gz"))
    assert (tmp_path / "annotations" / "zhiyuan_objv2_val.json").is_file()
    requests = len(server.served)
    _, again = o365.prepare(tmp_path, "val", mirror=server.origin, subsets=["sample"], sample_size=3, progress=False)
    assert len(server.served) == requests  # nothing downloaded twice
    assert _load(again["sample"]["path"]) == sample  # the same seed draws the same images


def test_cli_fix_names_reports_incomplete_split(tmp_path, server, capsys):
    code = main(["data", "objects365", "--root", str(tmp_path), "--mirror", server.origin, "--fix-names",
                 "--subset", "coco80", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1  # an image missing, one of another size
    assert "8 annotated images: 7 present, 1 missing, 1 of another size than listed" in out
    assert _listed(5) in out and "left out of the subsets: 2 images" in out
    coco = _load(tmp_path / "annotations" / "val_coco80.json")
    assert [c["name"] for c in coco["categories"]] == ["Person", "Monitor/TV", "Basket", "Table Tennis"]


def test_interrupted_download_resumes_with_range(tmp_path, server, capsys):
    first = _path(o365.patch_urls("val")[0])
    server.drop_once.add(first)
    assert main(["data", "objects365", "--root", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "patch0.tar.gz" in err
    assert list((tmp_path / "downloads").rglob("patch0.tar.gz.part"))
    assert main(["data", "objects365", "--root", str(tmp_path), "--no-progress"]) == 1  # incomplete, as designed
    resumed = server.get_requests(first)[-1]
    assert resumed.status == 206 and resumed.range == f"bytes={len(server.files[first]) // 2}-"
    assert (tmp_path / "val" / _listed(1)).is_file()


def test_corrupt_archive_is_refused_and_downloaded_again(tmp_path, server, capsys):
    first = _path(o365.patch_urls("val")[0])
    server.corrupt.add(first)
    assert main(["data", "objects365", "--root", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "corrupt" in err and "patch0.tar.gz" in err
    assert not list((tmp_path / "downloads" / "https").rglob("patch0.tar.gz*"))  # removed, not kept as good
    assert not (tmp_path / "val" / ".extracted" / "val_images_v1_patch0.tar.gz.done").exists()
    server.corrupt.clear()
    assert main(["data", "objects365", "--root", str(tmp_path), "--no-progress"]) == 1
    assert len(server.get_requests(first)) == 2
    assert len(server.get_requests(_path(o365.patch_urls("val")[1]))) == 1  # extracted archives are not fetched again
    assert (tmp_path / "val" / _listed(4)).is_file()


def test_train_split_annotation_archive_and_kept_archives(tmp_path, monkeypatch):
    monkeypatch.delenv(hub.OFFLINE_ENV, raising=False)
    with PayloadServer(files=_site("train")) as s:
        result, written = o365.prepare(tmp_path, "train", mirror=s.origin, subsets=["full"], keep_archives=True,
                                       progress=False)
    assert (tmp_path / "annotations" / "zhiyuan_objv2_train.json").is_file()
    assert len(list((tmp_path / "downloads").rglob("*.tar.gz"))) == 52  # 51 patches and the annotations
    assert len(result.missing) == 1 and written["full"]["images"] == 6


def test_bad_arguments_are_one_line(tmp_path, server, capsys):
    assert main(["data", "objects365", "--root", str(tmp_path), "--split", "test"]) == 2
    assert "unknown split 'test'" in capsys.readouterr().err
    assert main(["data", "objects365", "--root", str(tmp_path), "--subset", "coco", "--no-progress"]) == 2
    assert "unknown subset coco" in capsys.readouterr().err


def test_fix_name_corrects_the_v2_typos_only():
    fixed = {n: fix_name(n) for n in OBJECTS365_V2 if fix_name(n) != n}
    assert len(fixed) == 16  # 13 misspelt names and 3 with a trailing space (zoo/categories.py lists them)
    assert fixed["Moniter/TV"] == "Monitor/TV" and fixed["Tape Measur/ Ruler"] == "Tape Measure/Ruler"
    assert fixed["Hotair ballon"] == "Hotair balloon" and fixed["Table Tennis "] == "Table Tennis"
    assert all(normalize_name(fix_name(n)) == normalize_name(n) and fix_name(n) == fix_name(n).strip()
               for n in OBJECTS365_V2)


def test_check_names_unreadable_images(tmp_path):
    from training.data.index import AnnotationIndex

    images = tmp_path / "val"
    (images / "a").mkdir(parents=True)
    (images / "a" / "good.jpg").write_bytes(_jpeg((40, 30)))
    (images / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    doc = {"images": [{"id": 1, "file_name": "a/good.jpg", "width": 40, "height": 30},
                      {"id": 2, "file_name": "a/broken.jpg", "width": 40, "height": 30}],
           "annotations": [], "categories": CATEGORIES}
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    result = o365.check(AnnotationIndex.load(tmp_path / "ann.json"), images, progress=False)
    assert result.found == {0: "a/good.jpg"} and not result.missing
    assert len(result.mismatched) == 1 and result.mismatched[0].startswith("a/broken.jpg: unreadable")
