"""zoo.categories: the lists, their separation (v1 vs v2), the normaliser and the mappings."""
from __future__ import annotations

import ast
import sys
import uuid
from pathlib import Path

import pytest

from zoo import categories as cat

BUILTIN_COUNTS = {"objects365_v1": 365, "objects365_v2": 365, "coco": 80, "voc": 20, "citypersons": 1,
                  "ade20k": 150, "neon_trees": 1}

# D-FINE's public v2 -> COCO-80 table: for each COCO class, a 0-based Objects365 v2 index.
# Source: Peterande/D-FINE, src/solver/_solver.py, BaseSolver.obj365_ids (commit 4a1f73a8bcfa).
DFINE_OBJ365_IDS = [
    0, 46, 5, 58, 114, 55, 116, 65, 21, 40, 176, 127, 249, 24, 56, 139, 92, 78, 99, 96, 144, 295, 178, 180, 38, 39,
    13, 43, 120, 219, 148, 173, 165, 154, 137, 113, 145, 146, 204, 8, 35, 10, 88, 84, 93, 26, 112, 82, 265, 104, 141,
    152, 234, 143, 150, 97, 2, 50, 25, 75, 98, 153, 37, 73, 115, 132, 106, 61, 163, 134, 277, 81, 133, 18, 94, 30,
    169, 70, 328, 226,
]


def _key(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


# ---- lists -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key,count", BUILTIN_COUNTS.items())
def test_counts_and_unique_names(key: str, count: int) -> None:
    names = cat.get_categories(key)
    assert isinstance(names, tuple) and len(names) == count
    assert len({cat.normalize_name(n) for n in names}) == count


def test_builtin_keys_listed_first() -> None:
    assert cat.category_keys()[: len(BUILTIN_COUNTS)] == tuple(BUILTIN_COUNTS)


def test_coco_and_voc_match_torchvision() -> None:
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights
    from torchvision.models.segmentation import FCN_ResNet50_Weights

    coco = [n for n in FasterRCNN_ResNet50_FPN_Weights.DEFAULT.meta["categories"] if n not in ("__background__", "N/A")]
    assert tuple(coco) == cat.COCO
    assert ("__background__", *cat.VOC) == tuple(FCN_ResNet50_Weights.DEFAULT.meta["categories"])


def test_published_spellings_are_kept() -> None:
    v1, v2 = cat.OBJECTS365_V1, cat.OBJECTS365_V2
    assert v1[23] == "tv" and v2[37] == "Moniter/TV"
    assert "tissue " in v1 and {"Cigar/Cigarette ", "Formula 1 ", "Table Tennis "} <= set(v2)
    assert {"Bakset", "Ballon", "Dinning Table", "Tape Measur/ Ruler"} <= set(v2)
    assert cat.ADE20K[7] == "bed "
    assert all(n == n.lower() for n in v1 if n != "CD")


def test_v1_and_v2_differ() -> None:
    v1, v2 = cat.OBJECTS365_V1, cat.OBJECTS365_V2
    same_position = [i for i, (a, b) in enumerate(zip(v1, v2)) if cat.normalize_name(a) == cat.normalize_name(b)]
    assert same_position == [0, 1, 2, 15, 200, 300, 305]
    # REFERENCE.md's "differ in 66 names" holds for case-insensitive comparison; fixing the v2 typos leaves 54.
    lower1, lower2 = {n.lower().strip() for n in v1}, {n.lower().strip() for n in v2}
    assert len(lower2 - lower1) == len(lower1 - lower2) == 66
    norm1, norm2 = {cat.normalize_name(n) for n in v1}, {cat.normalize_name(n) for n in v2}
    assert len(norm2 - norm1) == len(norm1 - norm2) == 54
    assert {"other shoes", "other balls", "dessert", "orange/tangerine", "stuffed toy"} <= norm2 - norm1
    assert {"orange", "tangerine", "teddy bear"} <= norm1 - norm2


# ---- normaliser ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw,expected", [
    ("Person", "person"),
    ("  Table   Tennis ", "table tennis"),
    ("traffic_light", "traffic light"),
    ("hot-dog", "hot dog"),
    ("Moniter/TV", "monitor/tv"),
    ("Tape Measur/ Ruler", "tape measure/ruler"),
    ("Dinning Table", "dining table"),
    ("Hotair ballon", "hotair balloon"),
    ("Bakset", "basket"),
    ("Table Teniis paddle", "table tennis paddle"),
])
def test_normalize_name(raw: str, expected: str) -> None:
    assert cat.normalize_name(raw) == expected


def test_normalize_name_rejects_non_strings() -> None:
    with pytest.raises(TypeError, match="must be a str"):
        cat.normalize_name(3)  # type: ignore[arg-type]


# ---- keys and registration -----------------------------------------------------------------------------------------

def test_unknown_key_lists_known_keys() -> None:
    with pytest.raises(KeyError) as info:
        cat.get_categories("objects365")
    assert "objects365_v1" in str(info.value) and "neon_trees" in str(info.value)


def test_register_and_refusals() -> None:
    key = _key("test_custom")
    assert cat.register_categories(key, ["Apple", "pear"]) == ("Apple", "pear")
    assert cat.get_categories(key) == ("Apple", "pear") and key in cat.category_keys()
    with pytest.raises(ValueError, match="already registered"):
        cat.register_categories(key, ["plum"])
    with pytest.raises(ValueError, match="already registered"):
        cat.register_categories("coco", ["plum"])
    with pytest.raises(ValueError, match="duplicates"):
        cat.register_categories(_key("test_dup"), ["Cat", "dog", "cat "])
    with pytest.raises(ValueError, match="empty"):
        cat.register_categories(_key("test_empty"), [])
    with pytest.raises(ValueError, match="position 1 is empty"):
        cat.register_categories(_key("test_blank"), ["cat", "  "])
    with pytest.raises(TypeError, match="sequence of names"):
        cat.register_categories(_key("test_str"), "cat")
    with pytest.raises(ValueError, match="non-empty str"):
        cat.register_categories("", ["cat"])


# ---- explicit tables -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("src", ["objects365_v1", "objects365_v2"])
@pytest.mark.parametrize("dst", ["coco", "voc", "citypersons"])
def test_every_class_mapped(src: str, dst: str) -> None:
    indices = cat.map_indices(src, dst)
    assert len(indices) == len(cat.get_categories(dst))
    assert all(i is not None and 0 <= i < 365 for i in indices)
    assert len(set(indices)) == len(indices)  # no two destination classes share a source class


@pytest.mark.parametrize("coco,v1,v2", [
    ("bird", "wild bird", "Wild Bird"),
    ("sports ball", "baseball", "Baseball"),
    ("skis", "skis", "Skiboard"),
    ("suitcase", "suitcase", "Luggage"),
    ("tv", "tv", "Moniter/TV"),
    ("teddy bear", "teddy bear", "Stuffed Toy"),
    ("dining table", "dining table", "Dinning Table"),
    ("potted plant", "potted plant", "Potted Plant"),
    ("hair drier", "hair drier", "Hair Dryer"),
    ("cell phone", "cell phone", "Cell Phone"),
    ("orange", "orange", "Orange/Tangerine"),
    ("handbag", "handbag", "Handbag/Satchel"),
])
def test_decided_coco_cases(coco: str, v1: str, v2: str) -> None:
    assert dict(cat.mapping_table("objects365_v1", "coco"))[coco] == v1
    assert dict(cat.mapping_table("objects365_v2", "coco"))[coco] == v2


def test_voc_goes_through_coco() -> None:
    v2_voc = dict(cat.mapping_table("objects365_v2", "voc"))
    assert v2_voc["aeroplane"] == "Airplane" and v2_voc["diningtable"] == "Dinning Table"
    assert v2_voc["motorbike"] == "Motorcycle" and v2_voc["pottedplant"] == "Potted Plant"
    assert v2_voc["sofa"] == "Couch" and v2_voc["tvmonitor"] == "Moniter/TV"
    coco_voc = dict(cat.mapping_table("coco", "voc"))
    assert coco_voc["tvmonitor"] == "tv" and coco_voc["sofa"] == "couch"
    assert cat.mapping_table("objects365_v1", "citypersons") == [("person", "person")]


def test_tables_agree_with_name_matching() -> None:
    # An extra destination name keeps the list from resolving to a key, so the name matcher runs instead.
    for src in ("objects365_v1", "objects365_v2"):
        for dst in ("coco", "voc"):
            names = list(cat.get_categories(dst))
            assert cat.map_indices(src, names + ["zebra crossing"])[:-1] == cat.map_indices(src, dst)


def test_v2_coco_table_against_dfine() -> None:
    ours = cat.map_indices("objects365_v2", "coco")
    differ = [cat.COCO[j] for j, (a, b) in enumerate(zip(ours, DFINE_OBJ365_IDS)) if a != b]
    assert differ == ["skis"]
    assert cat.OBJECTS365_V2[DFINE_OBJ365_IDS[cat.COCO.index("skis")]] == "Skating and Skiing shoes"


def test_name_sequences_equal_to_a_list_use_its_table() -> None:
    assert cat.map_indices(list(cat.OBJECTS365_V2), list(cat.COCO)) == cat.map_indices("objects365_v2", "coco")


# ---- name matching for other lists ---------------------------------------------------------------------------------

def test_custom_list_mapping() -> None:
    table = cat.mapping_table("objects365_v2", ["person", "Bird", "tree", "TV_Monitor", "handbag", "sofa",
                                                "tangerine"])
    assert table == [("person", "Person"), ("Bird", "Wild Bird"), ("tree", None), ("TV_Monitor", "Moniter/TV"),
                     ("handbag", "Handbag/Satchel"), ("sofa", "Couch"), ("tangerine", "Orange/Tangerine")]
    assert cat.map_indices(["dog", "cat"], ["cat", "zebra", "dog"]) == [1, None, 0]
    key = _key("test_src")
    cat.register_categories(key, ["napkin/serviette", "Apple"])
    assert cat.map_indices(key, ["apple", "napkin"]) == [1, 0]
    assert cat.map_indices("objects365_v1", ["Orange/Tangerine"]) == [cat.OBJECTS365_V1.index("orange")]


def test_ambiguous_match_is_an_error() -> None:
    with pytest.raises(ValueError, match="several source classes"):
        cat.map_indices(["towel/napkin", "napkin/serviette"], ["napkin"])


def test_v1_v2_by_name() -> None:
    table = dict(cat.mapping_table("objects365_v1", "objects365_v2"))
    assert table["Moniter/TV"] == "tv" and table["Orange/Tangerine"] == "orange" and table["Other Balls"] is None
    back = dict(cat.mapping_table("objects365_v2", "objects365_v1"))
    assert back["tangerine"] == "Orange/Tangerine" and back["suitcase"] == "Luggage"


# ---- checking a checkpoint's list ----------------------------------------------------------------------------------

def test_check_categories_accepts_matches() -> None:
    cat.check_categories(list(cat.OBJECTS365_V2), "objects365_v2", strict=True)
    fixed = [cat.normalize_name(n).title() for n in cat.OBJECTS365_V2]  # typo-fixed, as Ultralytics ships it
    cat.check_categories(fixed, "objects365_v2")
    with pytest.raises(ValueError, match="positions differ"):
        cat.check_categories(fixed, "objects365_v2", strict=True)


def test_check_categories_names_the_other_version() -> None:
    with pytest.raises(ValueError, match="'objects365_v1' list") as info:
        cat.check_categories(cat.OBJECTS365_V1, "objects365_v2")
    assert "358 positions differ" in str(info.value)
    with pytest.raises(ValueError, match="'objects365_v2' list"):
        cat.check_categories(cat.OBJECTS365_V2, "objects365_v1")
    assert cat.find_key(cat.OBJECTS365_V1) == "objects365_v1"


def test_check_categories_length_and_closest() -> None:
    with pytest.raises(ValueError, match=r"got 364 names.*closest registered list: 'objects365_v1'"):
        cat.check_categories(cat.OBJECTS365_V1[:-1], "objects365_v1")


# ---- purity --------------------------------------------------------------------------------------------------------

def test_categories_module_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(cat.__file__).read_text())
    modules = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert modules and modules <= set(sys.stdlib_module_names) | {"__future__"}
