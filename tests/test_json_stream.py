"""training.data.json_stream against json.load (random documents read in chunks of every size, bad input), and the
annotation index's vectorised batch path against its record-by-record one."""
from __future__ import annotations

import json
import random

import pytest

from training.data.json_stream import JsonStreamError, iter_lists


def _value(rng: random.Random, depth: int = 0):
    r = rng.random()
    if depth > 2 or r < 0.3:
        return rng.choice([1, -2.5, 1e10, "a},{b", "x]", "ü", True, None])
    if r < 0.6:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {f"k{i}": _value(rng, depth + 1) for i in range(rng.randint(0, 3))}


@pytest.mark.parametrize("seed", range(40))
def test_lists_equal_json_load_for_any_chunk_size(tmp_path, seed):
    rng = random.Random(seed)
    doc = {}
    for k in range(rng.randint(1, 4)):
        records = [{"id": i, "v": _value(rng)} if rng.random() < 0.8 else _value(rng)
                   for i in range(rng.randint(0, 40))]
        doc[f"key{k}"] = records if rng.random() < 0.8 else _value(rng)
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc, indent=rng.choice([None, 1]), ensure_ascii=False), encoding="utf-8")
    for chunk in (1, 7, 64, 1 << 20):
        got: dict[str, list] = {}
        for key, batch in iter_lists(path, chunk_chars=chunk):
            assert batch
            got.setdefault(key, []).extend(batch)
        assert got == {k: v for k, v in json.loads(path.read_text()).items() if isinstance(v, list) and v}


def test_large_list_comes_in_batches_of_many_records(tmp_path):
    path = tmp_path / "doc.json"
    path.write_text(json.dumps({"images": [{"id": i} for i in range(5000)], "info": {"a": [1]},
                                "annotations": [{"id": i, "bbox": [1, 2, 3, 4]} for i in range(5000)]}))
    batches = list(iter_lists(path, chunk_chars=4096))
    assert [r["id"] for k, b in batches if k == "images" for r in b] == list(range(5000))
    assert [r["id"] for k, b in batches if k == "annotations" for r in b] == list(range(5000))
    assert len(batches) < 100  # whole chunks at a time, not one record per batch


@pytest.mark.parametrize("text, message", [
    ("", "not a JSON object"), ("[1]", "not a JSON object"), ('{"a": [1, 2', "expected ',' or ']'"),
    ('{"a": [1 2]}', "expected ',' or ']'"), ('{"a": 1} x', "extra data"), ('{"a": [{"b": 1},]}', "Expecting value"),
    ('{a: 1}', "Expecting value"), ('{"a" 1}', "expected ':'"),
])
def test_bad_json_is_refused(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    for chunk in (2, 1 << 20):
        with pytest.raises(JsonStreamError, match=message):
            list(iter_lists(path, chunk_chars=chunk))


def test_garbage_collector_is_restored_however_the_iteration_ends(tmp_path):
    import gc

    path = tmp_path / "doc.json"
    path.write_text(json.dumps({"a": [{"i": 1}], "b": [{"i": 2}]}))
    assert gc.isenabled()
    batches = iter_lists(path)
    next(batches)
    assert not gc.isenabled()  # off while reading
    batches.close()  # abandoned half way
    assert gc.isenabled()
    assert [k for k, _ in iter_lists(path)] == ["a", "b"] and gc.isenabled()


def test_utf8_byte_order_mark_is_skipped(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes("\ufeff".encode() + json.dumps({"images": [{"file_name": "ü.jpg"}]}).encode())
    assert list(iter_lists(path)) == [("images", [{"file_name": "ü.jpg"}])]


def test_index_fast_and_checked_batches_give_the_same_columns(tmp_path):
    import numpy as np

    from training.data.index import _Columns

    rng = random.Random(0)
    images = [{"id": i * 2 + (0.0 if i % 3 else 0), "file_name": f"p/ü{i}.jpg", "width": rng.choice([40, 40.7]),
               "height": 30} for i in range(50)]
    anns = [{"image_id": rng.choice(images)["id"], "category_id": rng.choice([1, 2.0]),
             "bbox": [rng.uniform(-5, 40), 1, rng.choice([0, 3.5]), 4],
             **rng.choice([{}, {"iscrowd": 1}, {"ignore": 1}])} for _ in range(200)]
    fast, checked = _Columns(tmp_path / "a.json"), _Columns(tmp_path / "a.json")
    assert fast._images_fast(images) and fast._annotations_fast(anns)
    checked._images_checked(images)
    checked._annotations_checked(anns)
    for name in ("image_ids", "widths", "heights", "name_lengths", "ann_image", "ann_cat", "ann_box", "ann_crowd"):
        a, b = getattr(fast, name)[0], getattr(checked, name)[0]
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert fast.names == checked.names
    assert not fast._annotations_fast([{**anns[0], "bbox": [1, 2, True, 4]}])  # a bool is not a number: walked
