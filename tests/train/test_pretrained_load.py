"""load_pretrained = instantiate the checkpoint's model config + load its state_dict; a
checkpoint written before the CMVN statistics became module state (its config names a
stats file that is gone) still loads, with the statistics from its state_dict."""
from __future__ import annotations

import torch

from speechlm.train.pretrained import load_pretrained

ENCODER = {"_target_": "speechlm.encoders.conformer.ConformerEncoder", "input_size": 8, "output_size": 16,
           "attention_heads": 2, "linear_units": 16, "num_blocks": 1}


def test_old_checkpoint_naming_a_missing_stats_file_loads(tmp_path):
    from speechlm.features import GlobalCMVN
    from speechlm.models.ctc_attention import CTCAttentionModel
    from speechlm.encoders.conformer import ConformerEncoder

    model = CTCAttentionModel(5, ConformerEncoder(**{k: v for k, v in ENCODER.items() if k != "_target_"}),
                              normalize=GlobalCMVN(torch.arange(8.0), torch.full((8,), 2.0)), ctc_weight=1.0)
    old_config = {"model": {"_target_": "speechlm.models.ctc_attention.CTCAttentionModel", "vocab_size": 5,
                            "encoder": ENCODER, "ctc_weight": 1.0,
                            "normalize": {"_target_": "speechlm.features.GlobalCMVN.from_stats_file",
                                          "path": str(tmp_path / "gone.npz")}},
                  "frontend": {"n_mels": 8}}
    torch.save({"state_dict": model.state_dict(), "speechlm": {"config": old_config, "tokenizer": None}},
               tmp_path / "old.ckpt")
    loaded, tokenizer, _ = load_pretrained(tmp_path / "old.ckpt")
    assert tokenizer is None
    torch.testing.assert_close(loaded.normalize.mean, torch.arange(8.0))
    torch.testing.assert_close(loaded.normalize.std, torch.full((8,), 2.0))
