"""Category lists and the mappings between them: the only place category facts live.

Every list is a tuple of names in label order (0-based class index; detectors add background as label 0, so output
label ``l`` names ``categories[l - 1]``). Names are kept exactly as their source publishes them, typos and trailing
spaces included, because checkpoints are tied to exact lists; :func:`normalize_name` is for matching only.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

# --------------------------------------------------------------------------------------------------------------
# Lists
# --------------------------------------------------------------------------------------------------------------

# Objects365 v1, 365 names. Source: MMDetection mmdet/datasets/objects365.py, Objects365V1Dataset.METAINFO["classes"]
# (open-mmlab/mmdetection, commit 394f7580b6649d8c8a23eebc525196c51a37ddcc; the 2.x CLASSES tuple is identical).
# Label i is the i-th category id in ascending order (MMDetection sorts the annotation file's categories by id before
# it builds cat2label). 'tissue ' ends in a space in the source.
OBJECTS365_V1: tuple[str, ...] = (
    "person", "sneakers", "chair", "hat", "lamp", "bottle", "cabinet/shelf", "cup", "car", "glasses",
    "picture/frame", "desk", "handbag", "street lights", "book", "plate", "helmet", "leather shoes", "pillow", "glove",
    "potted plant", "bracelet", "flower", "tv", "storage box", "vase", "bench", "wine glass", "boots", "bowl",
    "dining table", "umbrella", "boat", "flag", "speaker", "trash bin/can", "stool", "backpack", "couch", "belt",
    "carpet", "basket", "towel/napkin", "slippers", "barrel/bucket", "coffee table", "suv", "toy", "tie", "bed",
    "traffic light", "pen/pencil", "microphone", "sandals", "canned", "necklace", "mirror", "faucet", "bicycle",
    "bread", "high heels", "ring", "van", "watch", "sink", "horse", "fish", "apple", "camera", "candle",
    "teddy bear", "cake", "motorcycle", "wild bird", "laptop", "knife", "traffic sign", "cell phone", "paddle",
    "truck", "cow", "power outlet", "clock", "drum", "fork", "bus", "hanger", "nightstand", "pot/pan", "sheep",
    "guitar", "traffic cone", "tea pot", "keyboard", "tripod", "hockey", "fan", "dog", "spoon",
    "blackboard/whiteboard", "balloon", "air conditioner", "cymbal", "mouse", "telephone", "pickup truck", "orange",
    "banana", "airplane", "luggage", "skis", "soccer", "trolley", "oven", "remote", "baseball glove", "paper towel",
    "refrigerator", "train", "tomato", "machinery vehicle", "tent", "shampoo/shower gel", "head phone", "lantern",
    "donut", "cleaning products", "sailboat", "tangerine", "pizza", "kite", "computer box", "elephant", "toiletries",
    "gas stove", "broccoli", "toilet", "stroller", "shovel", "baseball bat", "microwave", "skateboard", "surfboard",
    "surveillance camera", "gun", "life saver", "cat", "lemon", "liquid soap", "zebra", "duck", "sports car",
    "giraffe", "pumpkin", "piano", "stop sign", "radiator", "converter", "tissue ", "carrot", "washing machine",
    "vent", "cookies", "cutting/chopping board", "tennis racket", "candy", "skating and skiing shoes", "scissors",
    "folder", "baseball", "strawberry", "bow tie", "pigeon", "pepper", "coffee machine", "bathtub", "snowboard",
    "suitcase", "grapes", "ladder", "pear", "american football", "basketball", "potato", "paint brush", "printer",
    "billiards", "fire hydrant", "goose", "projector", "sausage", "fire extinguisher", "extension cord",
    "facial mask", "tennis ball", "chopsticks", "electronic stove and gas stove", "pie", "frisbee", "kettle",
    "hamburger", "golf club", "cucumber", "clutch", "blender", "tong", "slide", "hot dog", "toothbrush",
    "facial cleanser", "mango", "deer", "egg", "violin", "marker", "ship", "chicken", "onion", "ice cream", "tape",
    "wheelchair", "plum", "bar soap", "scale", "watermelon", "cabbage", "router/modem", "golf ball", "pine apple",
    "crane", "fire truck", "peach", "cello", "notepaper", "tricycle", "toaster", "helicopter", "green beans",
    "brush", "carriage", "cigar", "earphone", "penguin", "hurdle", "swing", "radio", "CD", "parking meter", "swan",
    "garlic", "french fries", "horn", "avocado", "saxophone", "trumpet", "sandwich", "cue", "kiwi fruit", "bear",
    "fishing rod", "cherry", "tablet", "green vegetables", "nuts", "corn", "key", "screwdriver", "globe", "broom",
    "pliers", "volleyball", "hammer", "eggplant", "trophy", "dates", "board eraser", "rice", "tape measure/ruler",
    "dumbbell", "hamimelon", "stapler", "camel", "lettuce", "goldfish", "meat balls", "medal", "toothpaste",
    "antelope", "shrimp", "rickshaw", "trombone", "pomegranate", "coconut", "jellyfish", "mushroom", "calculator",
    "treadmill", "butterfly", "egg tart", "cheese", "pig", "pomelo", "race car", "rice cooker", "tuba",
    "crosswalk sign", "papaya", "hair drier", "green onion", "chips", "dolphin", "sushi", "urinal", "donkey",
    "electric drill", "spring rolls", "tortoise/turtle", "parrot", "flute", "measuring cup", "shark", "steak",
    "poker card", "binoculars", "llama", "radish", "noodles", "yak", "mop", "crab", "microscope", "barbell",
    "bread/bun", "baozi", "lion", "red cabbage", "polar bear", "lighter", "seal", "mangosteen", "comb", "eraser",
    "pitaya", "scallop", "pencil case", "saw", "table tennis paddle", "okra", "starfish", "eagle", "monkey", "durian",
    "game board", "rabbit", "french horn", "ambulance", "asparagus", "hoverboard", "pasta", "target",
    "hotair balloon", "chainsaw", "lobster", "iron", "flashlight",
)

# Objects365 v2, 365 names. Source: MMDetection mmdet/datasets/objects365.py, Objects365V2Dataset.METAINFO["classes"]
# (same commit), copied there from the v2 annotation file; D-FINE's commented list (Peterande/D-FINE,
# src/solver/_solver.py) is identical. Label i is the i-th name (category ids 1..365 in file order). Typos kept on
# purpose: 'Moniter/TV', 'Bakset', 'Ballon', 'Dinning Table', 'Billards', 'Extention Cord', 'Hotair ballon',
# 'Mushroon', 'Tape Measur/ Ruler', 'Campel', 'Buttefly', 'Noddles', 'Table Teniis paddle'; 'Cigar/Cigarette ',
# 'Formula 1 ' and 'Table Tennis ' end in a space.
OBJECTS365_V2: tuple[str, ...] = (
    "Person", "Sneakers", "Chair", "Other Shoes", "Hat", "Car", "Lamp", "Glasses", "Bottle", "Desk", "Cup",
    "Street Lights", "Cabinet/shelf", "Handbag/Satchel", "Bracelet", "Plate", "Picture/Frame", "Helmet", "Book",
    "Gloves", "Storage box", "Boat", "Leather Shoes", "Flower", "Bench", "Potted Plant", "Bowl/Basin", "Flag",
    "Pillow", "Boots", "Vase", "Microphone", "Necklace", "Ring", "SUV", "Wine Glass", "Belt", "Moniter/TV",
    "Backpack", "Umbrella", "Traffic Light", "Speaker", "Watch", "Tie", "Trash bin Can", "Slippers", "Bicycle",
    "Stool", "Barrel/bucket", "Van", "Couch", "Sandals", "Bakset", "Drum", "Pen/Pencil", "Bus", "Wild Bird",
    "High Heels", "Motorcycle", "Guitar", "Carpet", "Cell Phone", "Bread", "Camera", "Canned", "Truck",
    "Traffic cone", "Cymbal", "Lifesaver", "Towel", "Stuffed Toy", "Candle", "Sailboat", "Laptop", "Awning", "Bed",
    "Faucet", "Tent", "Horse", "Mirror", "Power outlet", "Sink", "Apple", "Air Conditioner", "Knife",
    "Hockey Stick", "Paddle", "Pickup Truck", "Fork", "Traffic Sign", "Ballon", "Tripod", "Dog", "Spoon", "Clock",
    "Pot", "Cow", "Cake", "Dinning Table", "Sheep", "Hanger", "Blackboard/Whiteboard", "Napkin", "Other Fish",
    "Orange/Tangerine", "Toiletry", "Keyboard", "Tomato", "Lantern", "Machinery Vehicle", "Fan",
    "Green Vegetables", "Banana", "Baseball Glove", "Airplane", "Mouse", "Train", "Pumpkin", "Soccer", "Skiboard",
    "Luggage", "Nightstand", "Tea pot", "Telephone", "Trolley", "Head Phone", "Sports Car", "Stop Sign", "Dessert",
    "Scooter", "Stroller", "Crane", "Remote", "Refrigerator", "Oven", "Lemon", "Duck", "Baseball Bat",
    "Surveillance Camera", "Cat", "Jug", "Broccoli", "Piano", "Pizza", "Elephant", "Skateboard", "Surfboard", "Gun",
    "Skating and Skiing shoes", "Gas stove", "Donut", "Bow Tie", "Carrot", "Toilet", "Kite", "Strawberry",
    "Other Balls", "Shovel", "Pepper", "Computer Box", "Toilet Paper", "Cleaning Products", "Chopsticks",
    "Microwave", "Pigeon", "Baseball", "Cutting/chopping Board", "Coffee Table", "Side Table", "Scissors", "Marker",
    "Pie", "Ladder", "Snowboard", "Cookies", "Radiator", "Fire Hydrant", "Basketball", "Zebra", "Grape", "Giraffe",
    "Potato", "Sausage", "Tricycle", "Violin", "Egg", "Fire Extinguisher", "Candy", "Fire Truck", "Billards",
    "Converter", "Bathtub", "Wheelchair", "Golf Club", "Briefcase", "Cucumber", "Cigar/Cigarette ", "Paint Brush",
    "Pear", "Heavy Truck", "Hamburger", "Extractor", "Extention Cord", "Tong", "Tennis Racket", "Folder",
    "American Football", "earphone", "Mask", "Kettle", "Tennis", "Ship", "Swing", "Coffee Machine", "Slide",
    "Carriage", "Onion", "Green beans", "Projector", "Frisbee", "Washing Machine/Drying Machine", "Chicken",
    "Printer", "Watermelon", "Saxophone", "Tissue", "Toothbrush", "Ice cream", "Hotair ballon", "Cello",
    "French Fries", "Scale", "Trophy", "Cabbage", "Hot dog", "Blender", "Peach", "Rice", "Wallet/Purse",
    "Volleyball", "Deer", "Goose", "Tape", "Tablet", "Cosmetics", "Trumpet", "Pineapple", "Golf Ball", "Ambulance",
    "Parking meter", "Mango", "Key", "Hurdle", "Fishing Rod", "Medal", "Flute", "Brush", "Penguin", "Megaphone",
    "Corn", "Lettuce", "Garlic", "Swan", "Helicopter", "Green Onion", "Sandwich", "Nuts", "Speed Limit Sign",
    "Induction Cooker", "Broom", "Trombone", "Plum", "Rickshaw", "Goldfish", "Kiwi fruit", "Router/modem",
    "Poker Card", "Toaster", "Shrimp", "Sushi", "Cheese", "Notepaper", "Cherry", "Pliers", "CD", "Pasta", "Hammer",
    "Cue", "Avocado", "Hamimelon", "Flask", "Mushroon", "Screwdriver", "Soap", "Recorder", "Bear", "Eggplant",
    "Board Eraser", "Coconut", "Tape Measur/ Ruler", "Pig", "Showerhead", "Globe", "Chips", "Steak",
    "Crosswalk Sign", "Stapler", "Campel", "Formula 1 ", "Pomegranate", "Dishwasher", "Crab", "Hoverboard",
    "Meat ball", "Rice Cooker", "Tuba", "Calculator", "Papaya", "Antelope", "Parrot", "Seal", "Buttefly",
    "Dumbbell", "Donkey", "Lion", "Urinal", "Dolphin", "Electric Drill", "Hair Dryer", "Egg tart", "Jellyfish",
    "Treadmill", "Lighter", "Grapefruit", "Game board", "Mop", "Radish", "Baozi", "Target", "French",
    "Spring Rolls", "Monkey", "Rabbit", "Pencil Case", "Yak", "Red Cabbage", "Binoculars", "Asparagus", "Barbell",
    "Scallop", "Noddles", "Comb", "Dumpling", "Oyster", "Table Teniis paddle", "Cosmetics Brush/Eyeliner Pencil",
    "Chainsaw", "Eraser", "Lobster", "Durian", "Okra", "Lipstick", "Cosmetics Mirror", "Curling", "Table Tennis ",
)

# COCO-80 in contiguous label order (category ids 1..90 with the 10 unused ids dropped). Source: torchvision's
# COCO detection weights meta["categories"] without "__background__"/"N/A"; MMDetection's CocoDataset is the same.
COCO: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis",
    "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)

# PASCAL VOC-20 in the standard order. Source: torchvision's VOC segmentation weights meta["categories"] without
# "__background__" (segmentation adds background as class 0, see docs/design.md).
VOC: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

CITYPERSONS: tuple[str, ...] = ("person",)

# ADE20K SceneParse150, 150 names in label order (annotation value v -> class v - 1; 0 is "other", ignored). Source:
# MMSegmentation mmseg/datasets/ade.py, ADE20KDataset.METAINFO["classes"] (open-mmlab/mmsegmentation, commit
# 088894bd6167bf55031e4d05475d22504035b3e6); 'bed ' ends in a space there and is kept.
ADE20K: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed ", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool",
    "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture",
    "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)

# The shipped demo model (DeepForest NEON tree crowns): one class.
NEON_TREES: tuple[str, ...] = ("tree",)

_BUILTIN: dict[str, tuple[str, ...]] = {
    "objects365_v1": OBJECTS365_V1,
    "objects365_v2": OBJECTS365_V2,
    "coco": COCO,
    "voc": VOC,
    "citypersons": CITYPERSONS,
    "ade20k": ADE20K,
    "neon_trees": NEON_TREES,
}
_REGISTRY: dict[str, tuple[str, ...]] = dict(_BUILTIN)

# --------------------------------------------------------------------------------------------------------------
# Explicit tables for the known transfers (Objects365 -> COCO / VOC / CityPersons)
# --------------------------------------------------------------------------------------------------------------

# One row per COCO class: (COCO name, Objects365 v1 name, Objects365 v2 name), the source class whose classifier
# weights the COCO class takes. Rows whose names differ beyond normalisation, with the reason:
#   bird          -> v1 'wild bird' / v2 'Wild Bird': the generic bird class; pigeon, duck, goose, parrot, eagle,
#                    swan, penguin and chicken are separate classes in Objects365.
#   handbag       -> v2 'Handbag/Satchel' (v1 'handbag').
#   suitcase      -> v1 'suitcase' (v1 has both 'suitcase' and 'luggage'); v2 'Luggage': v2 has no suitcase class and
#                    'Luggage' sits where v1 had 'luggage'; 'Briefcase' is a hand case, not COCO's rolling suitcase.
#   skis          -> v1 'skis'; v2 'Skiboard', the renamed v1 'skis' (v1: luggage, skis, soccer; v2: Soccer,
#                    Skiboard, Luggage).
#                    Not 'Skating and Skiing shoes' (boots; D-FINE's choice, see below).
#   sports ball   -> 'baseball' in both versions. No Objects365 class is "any ball": the candidates are soccer,
#                    baseball, basketball, volleyball, tennis ball ('Tennis' in v2), golf ball, american football and,
#                    in v2 only, 'Other Balls' (the leftovers of the named ball classes, so a poor generic). COCO's
#                    sports balls are mostly small balls in baseball and tennis scenes; 'baseball' also agrees with
#                    D-FINE's public table. Alternatives are a judgment call.
#   bowl          -> v2 'Bowl/Basin' (v1 'bowl').
#   orange        -> v1 'orange' (v1 splits orange and tangerine; COCO's orange covers both, orange is the larger
#                    sense); v2 'Orange/Tangerine', which merges the two v1 classes.
#   dining table  -> v2 'Dinning Table' (typo in v2). Not 'Desk', 'Coffee Table' or 'Side Table'.
#   tv            -> v1 'tv'; v2 'Moniter/TV' (typo in v2; covers computer monitors too, as COCO's tv does).
#   teddy bear    -> v1 'teddy bear'; v2 'Stuffed Toy', a broader class that replaced it (v2 has no teddy bear).
#   hair drier    -> v1 'hair drier'; v2 'Hair Dryer'.
#   potted plant, cell phone, couch, remote, donut, airplane, motorcycle: identical names (case aside) in both.
#   car, truck, boat, cup, bench: the same-named class, not a merge of Objects365's finer classes (SUV, Sports Car,
#                    Pickup Truck, Fire Truck, Heavy Truck, Sailboat, Ship, ...): one source row per COCO class.
# Comparison with D-FINE's `obj365_ids` (Peterande/D-FINE src/solver/_solver.py, commit 4a1f73a8bcfa, a 0-based v2
# index per COCO class): the two v2 tables agree on 79 of 80 classes. The one disagreement is skis: D-FINE takes
# 'Skating and Skiing shoes' (v2 index 148), we take 'Skiboard' (index 119), the class that continues v1 'skis'.
# (tests/test_categories.py checks this count against a copy of D-FINE's list.)
_COCO_ROWS: tuple[tuple[str, str, str], ...] = (
    ("person", "person", "Person"),
    ("bicycle", "bicycle", "Bicycle"),
    ("car", "car", "Car"),
    ("motorcycle", "motorcycle", "Motorcycle"),
    ("airplane", "airplane", "Airplane"),
    ("bus", "bus", "Bus"),
    ("train", "train", "Train"),
    ("truck", "truck", "Truck"),
    ("boat", "boat", "Boat"),
    ("traffic light", "traffic light", "Traffic Light"),
    ("fire hydrant", "fire hydrant", "Fire Hydrant"),
    ("stop sign", "stop sign", "Stop Sign"),
    ("parking meter", "parking meter", "Parking meter"),
    ("bench", "bench", "Bench"),
    ("bird", "wild bird", "Wild Bird"),
    ("cat", "cat", "Cat"),
    ("dog", "dog", "Dog"),
    ("horse", "horse", "Horse"),
    ("sheep", "sheep", "Sheep"),
    ("cow", "cow", "Cow"),
    ("elephant", "elephant", "Elephant"),
    ("bear", "bear", "Bear"),
    ("zebra", "zebra", "Zebra"),
    ("giraffe", "giraffe", "Giraffe"),
    ("backpack", "backpack", "Backpack"),
    ("umbrella", "umbrella", "Umbrella"),
    ("handbag", "handbag", "Handbag/Satchel"),
    ("tie", "tie", "Tie"),
    ("suitcase", "suitcase", "Luggage"),
    ("frisbee", "frisbee", "Frisbee"),
    ("skis", "skis", "Skiboard"),
    ("snowboard", "snowboard", "Snowboard"),
    ("sports ball", "baseball", "Baseball"),
    ("kite", "kite", "Kite"),
    ("baseball bat", "baseball bat", "Baseball Bat"),
    ("baseball glove", "baseball glove", "Baseball Glove"),
    ("skateboard", "skateboard", "Skateboard"),
    ("surfboard", "surfboard", "Surfboard"),
    ("tennis racket", "tennis racket", "Tennis Racket"),
    ("bottle", "bottle", "Bottle"),
    ("wine glass", "wine glass", "Wine Glass"),
    ("cup", "cup", "Cup"),
    ("fork", "fork", "Fork"),
    ("knife", "knife", "Knife"),
    ("spoon", "spoon", "Spoon"),
    ("bowl", "bowl", "Bowl/Basin"),
    ("banana", "banana", "Banana"),
    ("apple", "apple", "Apple"),
    ("sandwich", "sandwich", "Sandwich"),
    ("orange", "orange", "Orange/Tangerine"),
    ("broccoli", "broccoli", "Broccoli"),
    ("carrot", "carrot", "Carrot"),
    ("hot dog", "hot dog", "Hot dog"),
    ("pizza", "pizza", "Pizza"),
    ("donut", "donut", "Donut"),
    ("cake", "cake", "Cake"),
    ("chair", "chair", "Chair"),
    ("couch", "couch", "Couch"),
    ("potted plant", "potted plant", "Potted Plant"),
    ("bed", "bed", "Bed"),
    ("dining table", "dining table", "Dinning Table"),
    ("toilet", "toilet", "Toilet"),
    ("tv", "tv", "Moniter/TV"),
    ("laptop", "laptop", "Laptop"),
    ("mouse", "mouse", "Mouse"),
    ("remote", "remote", "Remote"),
    ("keyboard", "keyboard", "Keyboard"),
    ("cell phone", "cell phone", "Cell Phone"),
    ("microwave", "microwave", "Microwave"),
    ("oven", "oven", "Oven"),
    ("toaster", "toaster", "Toaster"),
    ("sink", "sink", "Sink"),
    ("refrigerator", "refrigerator", "Refrigerator"),
    ("book", "book", "Book"),
    ("clock", "clock", "Clock"),
    ("vase", "vase", "Vase"),
    ("scissors", "scissors", "Scissors"),
    ("teddy bear", "teddy bear", "Stuffed Toy"),
    ("hair drier", "hair drier", "Hair Dryer"),
    ("toothbrush", "toothbrush", "Toothbrush"),
)

# VOC class -> the COCO class it corresponds to (the usual VOC/COCO correspondence; the six renames are aeroplane,
# diningtable, motorbike, pottedplant, sofa and tvmonitor). VOC from Objects365 goes through this and _COCO_ROWS.
_VOC_TO_COCO: dict[str, str] = {
    "aeroplane": "airplane", "bicycle": "bicycle", "bird": "bird", "boat": "boat", "bottle": "bottle",
    "bus": "bus", "car": "car", "cat": "cat", "chair": "chair", "cow": "cow", "diningtable": "dining table",
    "dog": "dog", "horse": "horse", "motorbike": "motorcycle", "person": "person", "pottedplant": "potted plant",
    "sheep": "sheep", "sofa": "couch", "train": "train", "tvmonitor": "tv",
}


def _build_tables() -> dict[tuple[str, str], dict[str, str]]:
    """(src key, dst key) -> {dst name: src name} for every pair with a written-down table."""
    coco_from = {
        "objects365_v1": {coco: v1 for coco, v1, _ in _COCO_ROWS},
        "objects365_v2": {coco: v2 for coco, _, v2 in _COCO_ROWS},
        "coco": {coco: coco for coco, _, _ in _COCO_ROWS},
    }
    tables: dict[tuple[str, str], dict[str, str]] = {}
    for src, to_coco in coco_from.items():
        if src != "coco":
            tables[(src, "coco")] = to_coco
        tables[(src, "voc")] = {voc: to_coco[coco] for voc, coco in _VOC_TO_COCO.items()}
        tables[(src, "citypersons")] = {"person": to_coco["person"]}
    return tables


_TABLES = _build_tables()

# --------------------------------------------------------------------------------------------------------------
# Normalising and aliases (for matching only; stored names never change)
# --------------------------------------------------------------------------------------------------------------

# Misspelt words in the published v2 names -> the word meant.
_TYPOS: dict[str, str] = {
    "moniter": "monitor", "bakset": "basket", "ballon": "balloon", "dinning": "dining", "extention": "extension",
    "billards": "billiards", "mushroon": "mushroom", "campel": "camel", "buttefly": "butterfly",
    "noddles": "noodles", "teniis": "tennis", "measur": "measure",
}

# Groups of normalised names treated as one class when lists are matched by name (an exact normalised match always
# wins over an alias, so v1's own 'suitcase' beats 'luggage'). Sources: the VOC/COCO renames, the decisions in the
# COCO rows above (sports ball -> baseball included), and v1 -> v2 renames that only change spelling or number.
_ALIAS_GROUPS: tuple[tuple[str, ...], ...] = (
    ("airplane", "aeroplane"),
    ("motorcycle", "motorbike"),
    ("couch", "sofa"),
    ("tv", "tvmonitor", "tv monitor", "monitor/tv"),
    ("dining table", "diningtable"),
    ("potted plant", "pottedplant"),
    ("hair drier", "hair dryer"),
    ("bird", "wild bird"),
    ("teddy bear", "stuffed toy"),
    ("skis", "skiboard"),
    ("suitcase", "luggage"),
    ("sports ball", "baseball"),
    ("orange", "orange/tangerine"),
    ("glove", "gloves"),
    ("grapes", "grape"),
    ("toiletries", "toiletry"),
    ("life saver", "lifesaver"),
    ("pine apple", "pineapple"),
    ("meat balls", "meat ball"),
    ("trash bin/can", "trash bin can"),
    ("hockey", "hockey stick"),
    ("tennis ball", "tennis"),  # v2 'Tennis' continues v1 'tennis ball' (next to the other ball classes)
)
_ALIAS_OF: dict[str, int] = {name: i for i, group in enumerate(_ALIAS_GROUPS) for name in group}


def normalize_name(name: str) -> str:
    """Matching form of a class name: lowercase, '_'/'-' as spaces, single spaces, no spaces around '/', v2 typos fixed.

    >>> normalize_name("Moniter/TV"), normalize_name("Tape Measur/ Ruler"), normalize_name("Table Tennis ")
    ('monitor/tv', 'tape measure/ruler', 'table tennis')
    """
    if not isinstance(name, str):
        raise TypeError(f"a class name must be a str, got {type(name).__name__}: {name!r}")
    parts = re.sub(r"[_\-]", " ", name.lower()).split("/")
    return "/".join(" ".join(_TYPOS.get(word, word) for word in part.split()) for part in parts)


def fix_name(name: str) -> str:
    """A published name with the v2 typos of ``_TYPOS`` corrected (a word's capital kept) and stray spaces removed,
    for data files written for people (the stored lists keep the published names).

    >>> fix_name("Moniter/TV"), fix_name("Tape Measur/ Ruler"), fix_name("Table Teniis paddle"), fix_name("Formula 1 ")
    ('Monitor/TV', 'Tape Measure/Ruler', 'Table Tennis paddle', 'Formula 1')
    """
    def word(w: str) -> str:
        fixed = _TYPOS.get(w.lower())
        return w if fixed is None else (fixed[:1].upper() + fixed[1:] if w[:1].isupper() else fixed)

    return "/".join(" ".join(map(word, part.split())) for part in name.split("/"))


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------


def category_keys() -> tuple[str, ...]:
    """Every registered key: the built-in ones first, then user lists in registration order."""
    return tuple(_REGISTRY)


def get_categories(key: str) -> tuple[str, ...]:
    """The class names registered under ``key``, in label order."""
    try:
        return _REGISTRY[key]
    except (KeyError, TypeError):
        raise KeyError(f"unknown category key {key!r}; known keys: {', '.join(_REGISTRY)}") from None


def register_categories(key: str, names: Sequence[str]) -> tuple[str, ...]:
    """Register a model-specific list under a new ``key``; returns the stored tuple.

    Refuses a key already taken (built-in or user) and lists with empty or duplicate names (after normalising).
    """
    if not isinstance(key, str) or not key.strip():
        raise ValueError(f"a category key must be a non-empty str, got {key!r}")
    if key in _REGISTRY:
        raise ValueError(f"category key {key!r} is already registered; pick another key")
    stored = _validated(names, what=f"category list {key!r}")
    _REGISTRY[key] = stored
    return stored


def find_key(names: Sequence[str]) -> str | None:
    """The registered key whose list equals ``names`` position by position after normalising, or None."""
    wanted = [normalize_name(n) for n in names]
    for key, listed in _REGISTRY.items():
        if len(listed) == len(wanted) and all(normalize_name(a) == b for a, b in zip(listed, wanted)):
            return key
    return None


def check_categories(names: Sequence[str], key: str, *, strict: bool = False) -> None:
    """Raise ValueError unless ``names`` (e.g. a checkpoint's class list) is the list registered as ``key``.

    Names are compared position by position after normalising; ``strict=True`` compares the exact strings. The error
    says which registered list the names look like, so Objects365 v1 and v2 orders are never mixed up.
    """
    expected = get_categories(key)
    given = tuple(names)
    if strict:
        same = given == expected
    else:
        same = len(given) == len(expected) and all(
            normalize_name(a) == normalize_name(b) for a, b in zip(given, expected))
    if same:
        return
    lines = [f"class list does not match {key!r} ({len(expected)} names): got {len(given)} names"]
    mismatches = [(i, g, e) for i, (g, e) in enumerate(zip(given, expected))
                  if (g != e if strict else normalize_name(g) != normalize_name(e))]
    if mismatches:
        shown = "; ".join(f"[{i}] {g!r} != {e!r}" for i, g, e in mismatches[:5])
        more = f" (+{len(mismatches) - 5} more)" if len(mismatches) > 5 else ""
        lines.append(f"{len(mismatches)} positions differ: {shown}{more}")
    other = find_key(given)
    if other is not None and other != key:
        lines.append(f"these names are the {other!r} list: load with categories={other!r}, not {key!r}")
    else:
        guess = _closest_key(given)
        if guess is not None:
            lines.append(f"closest registered list: {guess[0]!r} ({guess[1]} of {len(given)} names in common)")
    raise ValueError("; ".join(lines))


def map_indices(src: str | Sequence[str], dst: str | Sequence[str]) -> list[int | None]:
    """For each destination class j (0-based), the 0-based source class whose weights it takes, or None.

    ``src``/``dst`` are keys or name sequences (a sequence equal to a registered list counts as that key). Pairs with
    a written-down table (Objects365 v1/v2 -> COCO/VOC/CityPersons, COCO -> VOC/CityPersons) use it; others match by
    exact normalised name, then alias group, then a '/'-part of a compound source name ('handbag' takes
    'Handbag/Satchel'), then the first part of a compound destination name that matches. Ambiguity is an error.
    """
    src_key, src_names = _resolve(src, "src")
    dst_key, dst_names = _resolve(dst, "dst")
    table = _TABLES.get((src_key, dst_key)) if src_key and dst_key else None
    if table is not None:
        position = {name: i for i, name in enumerate(src_names)}
        return [position[table[name]] for name in dst_names]
    src_norm = [normalize_name(s) for s in src_names]
    return [_match(name, src_names, src_norm) for name in dst_names]


def mapping_table(src: str | Sequence[str], dst: str | Sequence[str]) -> list[tuple[str, str | None]]:
    """(destination name, source name or None) for each destination class, as :func:`map_indices` decides."""
    _, src_names = _resolve(src, "src")
    _, dst_names = _resolve(dst, "dst")
    return [(name, None if i is None else src_names[i]) for name, i in zip(dst_names, map_indices(src, dst))]


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------


def _validated(names: Iterable[str], *, what: str) -> tuple[str, ...]:
    if isinstance(names, (str, bytes, Mapping)) or not isinstance(names, Iterable):
        raise TypeError(f"{what} must be a sequence of names, got {type(names).__name__}")
    stored = tuple(names)
    if not stored:
        raise ValueError(f"{what} is empty")
    seen: dict[str, int] = {}
    for i, name in enumerate(stored):
        norm = normalize_name(name)
        if not norm:
            raise ValueError(f"{what}: name at position {i} is empty")
        if norm in seen:
            raise ValueError(f"{what}: {name!r} at position {i} duplicates {stored[seen[norm]]!r} at {seen[norm]}")
        seen[norm] = i
    return stored


def _resolve(ref: str | Sequence[str], role: str) -> tuple[str | None, tuple[str, ...]]:
    """(key or None, names) for a key or a name sequence."""
    if isinstance(ref, str):
        return ref, get_categories(ref)
    names = _validated(ref, what=f"{role} name list")
    for key, listed in _REGISTRY.items():
        if listed == names:
            return key, names
    return None, names


def _match(name: str, src_names: tuple[str, ...], src_norm: list[str]) -> int | None:
    """Index of the source class for destination ``name`` (see :func:`map_indices` for the order of rules)."""
    norm = normalize_name(name)
    group = _ALIAS_OF.get(norm)
    tiers = (
        [i for i, s in enumerate(src_norm) if s == norm],
        [i for i, s in enumerate(src_norm) if group is not None and _ALIAS_OF.get(s) == group],
        [i for i, s in enumerate(src_norm) if "/" in s and norm in s.split("/")],
    )
    for found in tiers:
        if found:
            return _single(name, found, src_names)
    if "/" in norm:
        for part in norm.split("/"):
            index = _match(part, src_names, src_norm)
            if index is not None:
                return index
    return None


def _single(name: str, found: list[int], src_names: tuple[str, ...]) -> int:
    if len(found) > 1:
        options = ", ".join(f"{src_names[i]!r} ({i})" for i in found)
        raise ValueError(f"{name!r} matches several source classes: {options}; "
                         "rename the destination class to one of them")
    return found[0]


def _closest_key(names: Sequence[str]) -> tuple[str, int] | None:
    """(key, shared names) of the registered list sharing the most normalised names with ``names``, if any."""
    wanted = {normalize_name(n) for n in names}
    best = max(((key, len(wanted & {normalize_name(n) for n in listed})) for key, listed in _REGISTRY.items()),
               key=lambda item: item[1])
    return best if best[1] > 0 else None
