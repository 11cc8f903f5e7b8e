"""Which search decodes a model (speechlm.search.decoding): the model's own
`default_search`, under the experiment's `search` node (training config), under the decode
config's; a search named by `_target_` replaces the layers below it; options a search does
not take are refused."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from speechlm.search.decoding import search_node

ROOT = Path(__file__).resolve().parents[2]
JOINT = "speechlm.search.joint_beam.JointCTCAttentionSearch"
GREEDY = "speechlm.search.ctc_greedy.CTCGreedySearch"


class Model:
    default_search = {"_target_": JOINT, "beam_size": 10, "ctc_weight": 0.3}


def test_layers_of_search_options():
    model = Model()
    assert search_node(model, None) == Model.default_search
    assert search_node(model, {"_target_": None, "beam_size": None}, {"ctc_weight": 0.7}) == \
        {"_target_": JOINT, "beam_size": 10, "ctc_weight": 0.7}
    assert search_node(model, {"beam_size": 4, "ctc_weight": None}, {"ctc_weight": 0.7}) == \
        {"_target_": JOINT, "beam_size": 4, "ctc_weight": 0.7}
    assert search_node(model, {"_target_": GREEDY}, {"ctc_weight": 0.7}) == {"_target_": GREEDY}
    assert search_node(model, None, {"_target_": GREEDY}) == {"_target_": GREEDY}
    with pytest.raises(ValueError, match="takes no beam_size"):
        search_node(model, {"beam_size": 4}, {"_target_": GREEDY})

    class Pretrained:
        default_search = None

    with pytest.raises(ValueError, match="has no search of its own"):
        search_node(Pretrained(), None)


def test_demo_preset_decodes_leaning_on_ctc():
    """egs/digits/asr's own preset, found through the recipe's conf dir as asr.sh does."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"hydra.searchpath=[file://{ROOT / 'egs/digits/asr/conf'}]",
                                          "experiment=conformer_fast_demo"])
    assert cfg.trainer.max_epochs == 6 and cfg.encoder.num_blocks == 3 and cfg.search.ctc_weight == 0.7
