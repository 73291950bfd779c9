"""Key maps: load-only aliases, maps under prefixes, and merged maps that refuse a key claimed twice."""

import pytest
import torch

from polyformer.convert.keymap import KeyMap, Rule, split_rows
from polyformer.errors import ConfigError


def _tower_map():
    """A tiny tower: one fused q/k/v weight per layer (split on load) and a final norm."""
    return KeyMap(
        [
            Rule("encoder.layers.{}.qkv.weight",
                 ("layers.{}.attn.q_proj.weight", "layers.{}.attn.k_proj.weight", "layers.{}.attn.v_proj.weight"),
                 *split_rows(3)),
            Rule("final_layer_norm.weight", "final_norm.weight"),
        ],
        ignore=("encoder.position_ids",),
        aliases=[Rule("encoder.layer.{}.qkv.weight",
                      ("layers.{}.attn.q_proj.weight", "layers.{}.attn.k_proj.weight", "layers.{}.attn.v_proj.weight"),
                      *split_rows(3))],
    )


def _hf_tower(prefix, layers=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    state = {f"{prefix}encoder.layers.{i}.qkv.weight": torch.randn(6, 4, generator=g) for i in range(layers)}
    state[f"{prefix}final_layer_norm.weight"] = torch.randn(4, generator=g)
    state[f"{prefix}encoder.position_ids"] = torch.arange(4)
    return state


def test_aliases_load_a_second_spelling_and_saving_uses_the_main_one():
    key_map = _tower_map()
    main = _hf_tower("")
    alias = {k.replace("encoder.layers.", "encoder.layer."): v for k, v in main.items()}
    ours_main, unexpected_main = key_map.to_ours(main)
    ours_alias, unexpected_alias = key_map.to_ours(alias)
    assert unexpected_main == unexpected_alias == []
    assert ours_main.keys() == ours_alias.keys()
    for key in ours_main:
        torch.testing.assert_close(ours_main[key], ours_alias[key])
    back = key_map.to_hf(ours_alias)
    assert set(back) == {k for k in main if "position_ids" not in k}  # the main spelling
    torch.testing.assert_close(back["encoder.layers.1.qkv.weight"], main["encoder.layers.1.qkv.weight"])


def test_two_towers_under_prefixes_in_both_directions():
    key_map = KeyMap.merge(
        _tower_map().with_prefix("text_model.", "tower_b."),
        _tower_map().with_prefix("vision_model.", "tower_a."),
        KeyMap([Rule("logit_scale", "logit_scale"), Rule("visual_projection.weight", "proj_a.weight")]),
    )
    hf = {**_hf_tower("text_model.", seed=1), **_hf_tower("vision_model.", layers=3, seed=2),
          "logit_scale": torch.tensor(2.6), "visual_projection.weight": torch.randn(3, 4)}
    ours, unexpected = key_map.to_ours(hf)
    assert unexpected == []
    assert sorted(k for k in ours if k.startswith("tower_a.layers.")) == sorted(
        f"tower_a.layers.{i}.attn.{p}_proj.weight" for i in range(3) for p in "qkv"
    )
    torch.testing.assert_close(ours["tower_b.layers.1.attn.k_proj.weight"],
                               hf["text_model.encoder.layers.1.qkv.weight"][2:4])
    back = key_map.to_hf(ours)
    assert set(back) == {k for k in hf if "position_ids" not in k}
    for key, value in back.items():
        torch.testing.assert_close(value, hf[key])
    # The prefixed alias spelling of one tower loads too.
    aliased = {k.replace("vision_model.encoder.layers.", "vision_model.encoder.layer."): v for k, v in hf.items()}
    again, unexpected = key_map.to_ours(aliased)
    assert unexpected == [] and again.keys() == ours.keys()


def test_an_unprefixed_key_of_a_tower_is_unexpected():
    key_map = KeyMap.merge(_tower_map().with_prefix("text_model.", "tower_b."))
    _, unexpected = key_map.to_ours({"final_layer_norm.weight": torch.ones(4)})
    assert unexpected == ["final_layer_norm.weight"]


def test_merging_two_maps_that_claim_the_same_key_is_refused():
    with pytest.raises(ConfigError, match=r"maps 0 and 1 both claim the Hugging Face key 'encoder.layers.0.qkv.weight'"):
        KeyMap.merge(_tower_map(), _tower_map().with_prefix("", "other."))
    with pytest.raises(ConfigError, match=r"both claim the polyformer key 'final_norm.weight'.*with_prefix"):
        KeyMap.merge(_tower_map(), KeyMap([Rule("ln_f.weight", "final_norm.weight")]))
    # A literal layer of one map inside the other's numbered pattern is a clash too.
    with pytest.raises(ConfigError, match="both claim"):
        KeyMap.merge(_tower_map(), KeyMap([Rule("encoder.layers.3.qkv.weight", "extra.weight")]))
    with pytest.raises(ConfigError, match="at least one"):
        KeyMap.merge()
