"""The processor protocol: AutoTokenizer / AutoImageProcessor / AutoProcessor pick the class a folder
names (or its model_type implies), combined processors round-trip, and missing or unknown files are
named errors. Image pipelines never fall back to a default processor."""

import json

import numpy as np
import pytest
import torch

import polyformer
from polyformer import AutoProcessor, AutoTokenizer
from polyformer.errors import ConfigError, DataError
from polyformer.processors import (AutoImageProcessor, CombinedProcessor, ImageGPTProcessor, ImageProcessor, Processor,
                                   TextTokenizer, WordPieceTokenizer, register_processor, train_bpe)

transformers = pytest.importorskip("transformers")

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "##s", "a", "."]


class ToyProcessor(CombinedProcessor):
    """A tokenizer and an image processor in one folder (as CLIP's processor will be)."""

    hf_class = "ToyProcessor"


register_processor("processor", ToyProcessor, names=["ToyProcessor"])


@pytest.fixture()
def wordpiece():
    return WordPieceTokenizer({w: i for i, w in enumerate(WORDS)})


@pytest.fixture(scope="module")
def bpe():
    return train_bpe(texts=["the cat sat on the mat"] * 20, vocab_size=300, progress=False)


def test_every_processor_follows_the_protocol(wordpiece, bpe):
    for processor in (wordpiece, bpe, ImageProcessor(), ToyProcessor(tokenizer=wordpiece, image_processor=ImageProcessor())):
        assert isinstance(processor, Processor)


def test_auto_tokenizer_by_class_name_model_type_and_tokenizer_json(tmp_path, wordpiece, bpe):
    bpe.save_pretrained(tmp_path / "gpt")
    assert json.loads((tmp_path / "gpt" / "tokenizer_config.json").read_text())["tokenizer_class"] == "GPT2Tokenizer"
    assert type(AutoTokenizer.from_pretrained(tmp_path / "gpt")) is TextTokenizer
    (tmp_path / "gpt" / "tokenizer_config.json").unlink()  # no class named: tokenizer.json's model decides
    assert type(AutoTokenizer.from_pretrained(tmp_path / "gpt")) is TextTokenizer
    wordpiece.save_pretrained(tmp_path / "bert")
    (tmp_path / "bert" / "tokenizer_config.json").unlink()
    assert type(AutoTokenizer.from_pretrained(tmp_path / "bert")) is WordPieceTokenizer
    (tmp_path / "bert" / "tokenizer.json").unlink()  # vocab.txt alone: config.json's model_type decides
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    loaded = AutoTokenizer.from_pretrained(tmp_path / "bert")
    assert type(loaded) is WordPieceTokenizer and loaded.encode("the cats") == wordpiece.encode("the cats") == [2, 5, 6, 8, 3]
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "bert")
    assert theirs("the cats")["input_ids"] == [2, 5, 6, 8, 3]


def test_auto_processor_order_and_image_processors(tmp_path, wordpiece):
    wordpiece.save_pretrained(tmp_path / "text")
    assert type(AutoProcessor.from_pretrained(tmp_path / "text")) is WordPieceTokenizer
    transformers.ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(tmp_path / "vit")
    assert type(AutoProcessor.from_pretrained(tmp_path / "vit")) is ImageProcessor
    clusters = np.linspace(-1, 1, 12).reshape(4, 3)
    ImageGPTProcessor(size={"height": 4, "width": 4}, clusters=clusters).save_pretrained(tmp_path / "igpt")
    assert type(AutoImageProcessor.from_pretrained(tmp_path / "igpt")) is ImageGPTProcessor
    raw = json.loads((tmp_path / "vit" / "preprocessor_config.json").read_text())
    (tmp_path / "vit" / "preprocessor_config.json").write_text(json.dumps({**raw, "image_processor_type": "MadeUpImageProcessor"}))
    with pytest.raises(ConfigError, match="'MadeUpImageProcessor' is not supported; supported: .*ViTImageProcessor"):
        AutoProcessor.from_pretrained(tmp_path / "vit")


def test_combined_processor_round_trip(tmp_path, wordpiece):
    image_processor = ImageProcessor(size={"height": 8, "width": 8})
    ToyProcessor(tokenizer=wordpiece, image_processor=image_processor).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "processor_config.json").read_text()) == {"processor_class": "ToyProcessor"}
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is ToyProcessor
    image = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    out = loaded(text=["the cat", "a cat sat ."], images=[image, image], padding=True)
    assert torch.equal(out["input_ids"], wordpiece(["the cat", "a cat sat ."], padding=True, return_tensors="pt")["input_ids"])
    assert torch.equal(out["pixel_values"], image_processor([image, image])["pixel_values"])
    with pytest.raises(DataError, match="needs text"):
        loaded()
    with pytest.raises(ConfigError, match="missing \\['image_processor'\\]"):
        ToyProcessor(tokenizer=wordpiece)


def test_missing_and_broken_files_are_named(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        AutoProcessor.from_pretrained(tmp_path / "absent")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(DataError, match=r"a processor .* is missing \(it has config.json\).*save_pretrained"):
        AutoProcessor.from_pretrained(tmp_path)
    with pytest.raises(DataError, match="preprocessor_config.json is missing"):
        AutoImageProcessor.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(DataError, match="tokenizer.json is not a valid tokenizer.json"):
        AutoTokenizer.from_pretrained(tmp_path)


# -- image pipelines: the processor comes from the folder or the caller, never a default --------------
@pytest.fixture(scope="module")
def vit32(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vit32")
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=4, intermediate_size=64, id2label={0: "a", 1: "b"},
                                    label2id={"a": 0, "b": 1})
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    return folder


def test_image_model_without_its_processor_is_refused(vit32, tmp_path):
    with pytest.raises(DataError, match=r"preprocessor_config.json is missing.*save_pretrained"):
        polyformer.pipeline("image-classification", model=vit32)
    model = polyformer.from_pretrained(vit32)
    with pytest.raises(ConfigError, match="needs processor="):
        polyformer.pipeline("image-classification", model=model)
    with pytest.raises(ConfigError, match="makes 224x224 images but the model was built for 32x32"):
        polyformer.pipeline("image-classification", model=model, processor=ImageProcessor())
    classifier = polyformer.pipeline("image-classification", model=model, processor=ImageProcessor(size=32))
    assert {p["label"] for p in classifier(np.zeros((40, 40, 3), np.uint8))} == {"a", "b"}
