"""The shared loading machinery: key maps both ways, named weight errors, files, registries."""

from dataclasses import dataclass

import pytest
import torch
from torch import nn

import polyformer
from polyformer.convert import KeyMap, Rule, load_state_dict, save_state_dict, split_rows, transpose
from polyformer.errors import CheckpointError, ConfigError
from polyformer.models import PretrainedModel, model_class, register_model
from polyformer.models.base import FamilyConfig


@dataclass
class ToyConfig(FamilyConfig):
    model_types = ("toy",)
    hf_names = {"width": "hidden", "layers": ("n_layers", "n_layer")}  # an older spelling is read too
    own_fields = ()

    width: int = 4
    layers: int = 2


@register_model
class Toy(PretrainedModel):
    model_type = "toy"
    architectures = ("ToyModel",)
    config_class = ToyConfig

    def __init__(self, config):
        super().__init__(config)
        self.layers = nn.ModuleList(
            nn.ModuleDict({"q": nn.Linear(config.width, config.width), "k": nn.Linear(config.width, config.width)})
            for _ in range(config.layers)
        )
        self.head = nn.Linear(config.width, 3)

    @classmethod
    def key_map(cls, config):
        return KeyMap(
            [
                Rule("h.{}.qk.weight", ("layers.{}.q.weight", "layers.{}.k.weight"), *split_rows(2, transposed=True)),
                Rule("h.{}.qk.bias", ("layers.{}.q.bias", "layers.{}.k.bias"), *split_rows(2)),
                Rule("out.weight", "head.weight", *transpose()),
                Rule("out.bias", "head.bias"),
            ],
            ignore=("h.{}.mask",),
            hf_prefixes=("model.", ""),
        )


def _hf_state(width=4, layers=2):
    state = {}
    for i in range(layers):
        state[f"model.h.{i}.qk.weight"] = torch.randn(width, 2 * width)  # Conv1D (in, 2*out)
        state[f"model.h.{i}.qk.bias"] = torch.randn(2 * width)
        state[f"model.h.{i}.mask"] = torch.ones(3, 3)
    state["model.out.weight"] = torch.randn(width, 3)
    state["model.out.bias"] = torch.randn(3)
    return state


def _folder(tmp_path, state, config=None):
    import json

    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(config or ToyConfig().to_hf("ToyModel")))
    save_state_dict(state, tmp_path / "model.safetensors")
    return tmp_path


def test_load_converts_literally_and_save_round_trips(tmp_path):
    hf = _hf_state()
    model = polyformer.from_pretrained(_folder(tmp_path / "a", hf))
    assert isinstance(model, Toy)
    w = hf["model.h.1.qk.weight"]
    torch.testing.assert_close(model.layers[1].q.weight, w[:, :4].t())
    torch.testing.assert_close(model.layers[1].k.weight, w[:, 4:].t())
    torch.testing.assert_close(model.head.weight, hf["model.out.weight"].t())
    model.save_pretrained(tmp_path / "b")
    saved, _ = load_state_dict(tmp_path / "b")
    assert set(saved) == {k.removeprefix("model.") for k in hf if not k.endswith(".mask")}
    for key, value in saved.items():
        torch.testing.assert_close(value, hf["model." + key])
    again = polyformer.from_pretrained(tmp_path / "b")
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_missing_unexpected_and_misshaped_weights_are_named(tmp_path):
    hf = _hf_state()
    del hf["model.h.0.qk.bias"]
    hf["model.extra.weight"] = torch.ones(1)
    hf["model.out.bias"] = torch.ones(5)
    with pytest.raises(CheckpointError) as error:
        polyformer.from_pretrained(_folder(tmp_path, hf))
    message = str(error.value)
    assert "missing weights: layers.0.k.bias, layers.0.q.bias" in message
    assert "unexpected weights: model.extra.weight" in message
    assert "head.bias (checkpoint (5,), model (3,))" in message


def test_pytorch_bin_is_loaded_with_weights_only(tmp_path):
    import json

    (tmp_path / "config.json").write_text(json.dumps(ToyConfig().to_hf()))
    torch.save(_hf_state(), tmp_path / "pytorch_model.bin")
    assert isinstance(polyformer.from_pretrained(tmp_path), Toy)


def test_corrupt_truncated_and_absent_files(tmp_path):
    folder = _folder(tmp_path / "t", _hf_state())
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        polyformer.from_pretrained(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json is missing"):
        polyformer.from_pretrained(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="no such model folder"):
        polyformer.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        polyformer.from_pretrained(tmp_path / "bad")


def test_unknown_model_type_and_architecture_list_the_supported_ones():
    with pytest.raises(CheckpointError, match="model_type 'bert2' is not supported; supported types: .*toy"):
        model_class({"model_type": "bert2"})
    with pytest.raises(CheckpointError, match="architecture ToyForSomething .* supported: ToyModel"):
        model_class({"model_type": "toy", "architectures": ["ToyForSomething"]})


def test_unknown_task_lists_tasks():
    with pytest.raises(ConfigError, match="unknown task 'translate-to-klingon'"):
        polyformer.pipeline("translate-to-klingon", model="x")
