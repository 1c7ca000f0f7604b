"""Model cards are generated from the registry and must stay in sync with it."""
from __future__ import annotations

from pathlib import Path

import yaml

import zoo
from zoo.cards import render_card, stale_cards

CARDS = Path(__file__).resolve().parents[1] / "model_cards"


def test_cards_in_sync_with_registry():
    assert stale_cards(CARDS) == [], "model_cards/ is out of date: run `zoo cards`"


def test_card_front_matter_is_hugging_face_yaml():
    for name in zoo.list_models():
        spec = zoo.get_spec(name)
        text = render_card(spec)
        front = yaml.safe_load(text.split("---\n")[1])
        assert front["license"] == spec.license and "objects365-zoo" in front["tags"]
        own = [m for m in spec.metrics if m.of_these_weights]
        if own:
            results = front["model-index"][0]["results"]
            assert [r["metrics"][0]["value"] for r in results] == [m.value for m in own]
        else:
            assert "model-index" not in front


def test_stale_card_is_detected(tmp_path):
    (tmp_path / "fpn_r50_obj365.md").write_text("hand edited\n")
    stale = stale_cards(tmp_path)
    assert "fpn_r50_obj365" in stale and set(zoo.list_models()) <= set(stale)
