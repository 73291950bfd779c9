"""The family template: config.json from a declared table, tied weights, head checks, one writer."""

import json
from dataclasses import dataclass, field
from typing import ClassVar

import pytest
import torch
from torch import nn

from polyformer.attention import AttentionSpec
from polyformer.convert import KeyMap, Rule
from polyformer.errors import CheckpointError, ConfigError
from polyformer.models.base import POLYFORMER_KEY, FamilyConfig, PretrainedModel, init_weights
from polyformer.models.outputs import SequenceClassifierOutput


@dataclass
class PetConfig(FamilyConfig):
    model_types: ClassVar[tuple[str, ...]] = ("pet", "pet_v0")
    hf_names: ClassVar[dict] = {"d_model": "hidden_size", "n_layers": ("num_layers", "n_layer")}
    hf_constants: ClassVar[dict] = {"attention_dropout": 0.0}
    hf_required: ClassVar[tuple[str, ...]] = ("d_model",)
    has_labels: ClassVar[bool] = True

    d_model: int = 4
    n_layers: int = 1
    vocab_size: int = 7
    attention: AttentionSpec = field(default_factory=AttentionSpec)
    num_labels: int | None = None
    id2label: dict[int, str] | None = None
    problem_type: str | None = None

    def __post_init__(self) -> None:
        self.attention = AttentionSpec.coerce(self.attention)
        self.resolve_label_fields()
        self.check_positive("d_model", "n_layers")

    @classmethod
    def extra_from_hf(cls, raw, where):
        return {"vocab_size": raw.get("vocab", 7)}

    def extra_to_hf(self):
        return {"vocab": self.vocab_size}


class Pet(PretrainedModel):
    model_type = "pet"
    architectures = ("PetForSequenceClassification",)
    config_class = PetConfig
    head_weight = "classifier.weight"
    tied_weights = {"decoder.weight": "embed.weight"}

    def __init__(self, config: PetConfig, tie: bool = True) -> None:
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.decoder = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        if tie:
            self.decoder.weight = self.embed.weight

    @classmethod
    def key_map(cls, config, tie: bool = True):
        rules = [Rule("emb.weight", "embed.weight"), Rule("cls.weight", "classifier.weight"),
                 Rule("cls.bias", "classifier.bias"), Rule("dec.weight", "decoder.weight")]
        return KeyMap(rules)

    def forward(self, ids):
        return SequenceClassifierOutput(logits=self.classifier(self.embed(ids).mean(1)))


def test_config_json_both_ways_from_the_table():
    raw = {"model_type": "pet_v0", "hidden_size": 8, "n_layer": 3, "vocab": 11,
           "id2label": {"0": "cat", "1": "dog"}, POLYFORMER_KEY: {"attention": "sliding_window"}}
    config = PetConfig.from_hf(raw)
    assert (config.d_model, config.n_layers, config.vocab_size) == (8, 3, 11)  # older spelling n_layer read
    assert config.id2label == {0: "cat", 1: "dog"} and config.num_labels == 2
    assert config.attention == AttentionSpec("sliding_window")
    out = config.to_hf("PetForSequenceClassification")
    assert out["model_type"] == "pet" and out["architectures"] == ["PetForSequenceClassification"]
    assert out["num_layers"] == 3 and "n_layer" not in out  # written under the first spelling
    assert out["attention_dropout"] == 0.0 and out["vocab"] == 11
    assert out["label2id"] == {"cat": 0, "dog": 1}
    assert out[POLYFORMER_KEY] == {"attention": {"name": "sliding_window", "options": {}}}
    assert PetConfig.from_hf(json.loads(json.dumps(out))) == config
    assert POLYFORMER_KEY not in PetConfig(d_model=8).to_hf()  # dense is the default: nothing of ours


def test_config_errors_name_the_file_and_the_fix():
    with pytest.raises(CheckpointError, match="model_type 'bert' is not one this config reads .pet, pet_v0."):
        PetConfig.from_hf({"model_type": "bert", "hidden_size": 8})
    with pytest.raises(CheckpointError, match="missing 'hidden_size'"):
        PetConfig.from_hf({"model_type": "pet"})
    with pytest.raises(CheckpointError, match=r"unknown 'polyformer' setting\(s\) \['windw'\]"):
        PetConfig.from_hf({"model_type": "pet", "hidden_size": 8, POLYFORMER_KEY: {"windw": 3}})
    with pytest.raises(CheckpointError, match="my.json: PetConfig.d_model must be a positive integer"):
        PetConfig.from_hf({"model_type": "pet", "hidden_size": -1}, "my.json")
    with pytest.raises(ConfigError, match="num_labels=3 but id2label names 2"):
        PetConfig(num_labels=3, id2label={0: "a", 1: "b"})


def _save(model: Pet, folder):
    torch.manual_seed(0)
    for p in model.parameters():
        nn.init.normal_(p)
    return model.save_pretrained(folder)


def test_tied_weights_are_left_out_and_restored(tmp_path):
    model = Pet(PetConfig(id2label={0: "a", 1: "b", 2: "c"}))
    folder = _save(model, tmp_path / "pet")
    from safetensors.torch import load_file

    saved = load_file(folder / "model.safetensors")
    assert "dec.weight" not in saved  # Hugging Face drops a tied copy
    loaded = Pet.from_pretrained(folder)
    assert loaded.decoder.weight is loaded.embed.weight
    assert torch.equal(loaded.embed.weight, model.embed.weight)
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert loaded.id2label == {0: "a", 1: "b", 2: "c"}


def test_untied_model_keeps_and_needs_its_own_weight(tmp_path):
    model = Pet(PetConfig(num_labels=2), tie=False)
    folder = _save(model, tmp_path / "pet")
    loaded = Pet.from_pretrained(folder, tie=False)
    assert torch.equal(loaded.decoder.weight, model.decoder.weight)
    assert loaded.decoder.weight is not loaded.embed.weight


def test_a_label_map_that_does_not_fit_the_head_is_named(tmp_path):
    folder = _save(Pet(PetConfig(num_labels=3)), tmp_path / "pet")
    raw = json.loads((folder / "config.json").read_text())
    raw["id2label"], raw["label2id"] = {"0": "a", "1": "b"}, {"a": 0, "b": 1}
    (folder / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="classifier.weight has 3 rows .* id2label names 2"):
        Pet.from_pretrained(folder)


def test_processor_is_saved_beside_the_model(tmp_path):
    written = []

    class Recorder:
        def save_pretrained(self, folder):
            written.append(folder)

    folder = Pet(PetConfig()).save_pretrained(tmp_path / "pet", processor=Recorder())
    assert written == [folder] and (folder / "config.json").exists()


def test_init_weights_follows_hugging_face():
    torch.manual_seed(0)
    model = nn.ModuleDict({"lin": nn.Linear(64, 64), "norm": nn.LayerNorm(64),
                           "attn": nn.ModuleDict({"out_proj": nn.Linear(64, 64)})})
    for p in model.parameters():
        nn.init.constant_(p, 3.0)
    init_weights(model, 0.02, residual_layers=8)
    assert torch.all(model["lin"].bias == 0) and torch.all(model["norm"].weight == 1)
    assert abs(model["lin"].weight.std().item() - 0.02) < 0.002
    assert abs(model["attn"]["out_proj"].weight.std().item() - 0.02 / 4) < 0.0005  # 1/sqrt(2 * 8)


def test_num_parameters_counts_tied_weights_once_and_can_leave_out_embeddings():
    model = Pet(PetConfig(d_model=4, vocab_size=7, num_labels=2))
    assert model.num_parameters() == 7 * 4 + (4 * 2 + 2)
    assert model.num_parameters(exclude_embeddings=True) == 4 * 2 + 2
