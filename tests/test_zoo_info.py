"""`zoo info NAME` as a process: a readable summary of the registry entry, `--json` for all of it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import zoo

REPO = Path(__file__).resolve().parents[1]


def _info(*args: str, registry: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo", "info", *args], capture_output=True, text=True, check=False,
                          timeout=120, cwd=REPO, env={"PATH": "/usr/bin:/bin", "O365ZOO_REGISTRY": str(registry)})


def _rows(stdout: str) -> dict[str, str]:
    """``field -> value`` of the summary, wrapped lines joined."""
    rows: dict[str, str] = {}
    key = ""
    for line in stdout.splitlines()[1:]:
        if line[2] != " ":
            key, value = line[2:17].strip(), line[17:]
            rows[key] = f"{rows[key]} | {value}" if key in rows else value  # repeated fields (metric)
        else:
            rows[key] += " " + line.strip()
    return rows


def test_summary_of_the_embedded_default(tmp_path):
    proc = _info("yolox_nano_coco", registry=tmp_path / "registry.json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "yolox_nano_coco"
    assert max(len(line) for line in proc.stdout.splitlines()) <= 100
    rows = _rows(proc.stdout)
    spec = zoo.get_spec("yolox_nano_coco")
    assert rows["task"] == "detection" and rows["architecture"] == "yolox_nano"
    assert rows["categories"].startswith("coco: 80 classes plus background (person, bicycle, car,")
    assert rows["weights"] == spec.source and rows["sha256"] == spec.sha256 and len(rows["sha256"]) == 64
    assert rows["file size"] == "3.6 MiB (3,768,588 bytes)"
    assert rows["licence"] == "apache-2.0"
    assert rows["preprocessing"] == ("letterbox into 416x416 (pad 114/255); mean 0,0,0 std 0.003922,0.003922,0.003922 "
                                     "on [0, 1]; BGR; score >= 0.05; NMS 0.65; at most 100 detections")
    assert rows["metric"].startswith("box AP 25.8 on COCO val2017; source: Megvii YOLOX README")
    assert rows["description"] == spec.description


def test_alias_prefix_digest_reference_metric_and_unpublished(tmp_path):
    registry = tmp_path / "registry.json"
    rows = _rows(_info("fpn_r50_obj365", registry=registry).stdout)
    assert rows["alias of"] == "fpn_r50_obj365v1_syncbn_1350k"
    assert rows["sha256"].startswith("337d8965... (the prefix in the file name")
    assert rows["weights"].endswith("obj365v1_20220510_142457-337d8965.pth") and " " not in rows["weights"]
    rows = _rows(_info("fpn_r50_obj365_coco", registry=registry).stdout)
    assert rows["weights"] == "not published yet" and rows["sha256"] == "-" and rows["file size"] == "unknown"
    assert "(a reference figure, not of these weights); source: Shao et al. 2019" in rows["metric"]
    rows = _rows(_info("pspnet_r50_obj365_ade20k", registry=registry).stdout)
    assert rows["categories"].startswith("ade20k: 150 classes (wall, building,")  # no background class
    assert "score" not in rows["preprocessing"]


def test_json_is_the_whole_entry(tmp_path):
    proc = _info("yolox_nano_coco", "--json", registry=tmp_path / "registry.json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["sha256"] == zoo.get_spec("yolox_nano_coco").sha256 and data["published"] is True
    assert data["preprocessing"]["resize"] == "letterbox"


def test_unknown_name_suggests_close_ones(tmp_path):
    proc = _info("yolox_nano", registry=tmp_path / "registry.json")
    assert proc.returncode == 2 and "did you mean yolox_nano_coco" in proc.stderr and proc.stdout == ""
