"""``pipeline("zero-shot-image-classification")`` against ``transformers.pipeline`` on the same tiny
random CLIP folders, and its additions (prompt ensembling, the label cache, long texts) against
references computed with the ``transformers`` model directly."""

import warnings

import numpy as np
import pytest
import torch
from _clip_folder import save_tiny_clip
from PIL import Image

from polyformer.errors import ConfigError
from polyformer.pipelines import pipeline
from polyformer.pipelines.zero_shot_image_classification import LongTextWarning

transformers = pytest.importorskip("transformers")

TASK = "zero-shot-image-classification"
LABELS = ["cat", "dog", "a red circle", "car", "blue square"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    base = save_tiny_clip(root / "quick_gelu")
    return {
        "quick_gelu": base,
        # other activation, unequal tower widths, another patch grid
        "gelu": save_tiny_clip(root / "gelu", hidden_act="gelu", text_width=40, vision_width=32, patch_size=16,
                               projection_dim=16, seed=1, processor_from=base),
        "short": save_tiny_clip(root / "short", max_positions=12, seed=2, processor_from=base),
    }


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Mixed sizes and kinds: files, PIL images (RGB, grayscale, RGBA) and an array."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("images")
    paths = []
    for i in range(2):
        path = root / f"photo{i}.png"
        Image.fromarray(rng.integers(0, 256, (37 + 9 * i, 45, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    gray = Image.fromarray(rng.integers(0, 256, (40, 33), dtype=np.uint8), mode="L")
    rgba = Image.fromarray(rng.integers(0, 256, (35, 35, 4), dtype=np.uint8), mode="RGBA")
    array = rng.integers(0, 256, (50, 41, 3), dtype=np.uint8)
    return [*paths, gray, rgba, Image.fromarray(array)]


def as_transformers_sees_it(images):
    """The images with transparency composited onto white by hand.

    ``transformers``' pipeline opens every image with ``convert("RGB")``, which drops the alpha
    channel (whatever colour hides under transparent pixels shows), before its own image
    processor, which would composite onto white, sees it; polyformer composites as the image
    processor does. With the compositing done beforehand both read the same pixels.
    """
    out = []
    for image in images:
        if isinstance(image, Image.Image) and image.mode == "RGBA":
            image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image).convert("RGB")
        out.append(image)
    return out


def assert_same(ours, theirs, atol=1e-5):
    if isinstance(theirs, dict):
        assert list(ours) == ["score", "label"] and ours["label"] == theirs["label"]
        assert ours["score"] == pytest.approx(theirs["score"], abs=atol)
        return
    assert isinstance(ours, list) and len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert_same(a, b, atol)


@pytest.mark.parametrize("name", ["quick_gelu", "gelu"])
def test_scores_and_order_equal_transformers_pipeline(folders, images, name):
    ours = pipeline(TASK, model=folders[name], batch_size=2)
    theirs = transformers.pipeline(TASK, model=str(folders[name]))
    assert_same(ours(images, candidate_labels=LABELS), theirs(as_transformers_sees_it(images), candidate_labels=LABELS))
    # one image gives one list; a path, a PIL image; another template; images= spelling
    assert_same(ours(images[0], candidate_labels=LABELS[:3]), theirs(images[0], candidate_labels=LABELS[:3]))
    template = "a blurry drawing of {}"
    assert_same(ours(images=images[2], candidate_labels=LABELS, hypothesis_template=template),
                theirs(images[2], candidate_labels=LABELS, hypothesis_template=template))
    assert_same(ours(images[3], candidate_labels=["cat"]), theirs(images[3], candidate_labels=["cat"]))


def test_scores_equal_the_models_own_logits(folders, images):
    """The cached, batched path gives what one forward of the model gives (softmax of logits_per_image)."""
    from polyformer.models import from_pretrained
    from polyformer.processors.auto import AutoProcessor

    model, processor = from_pretrained(folders["quick_gelu"]).eval(), AutoProcessor.from_pretrained(folders["quick_gelu"])
    sentences = [f"This is a photo of {label}." for label in LABELS]
    with torch.no_grad():
        probs = model(**processor(text=sentences, images=images, padding=True)).logits_per_image.softmax(-1)
    results = pipeline(TASK, model=model, processor=processor)(images, candidate_labels=LABELS)
    for row, result in zip(probs.tolist(), results):
        assert {r["label"]: r["score"] for r in result} == pytest.approx(dict(zip(LABELS, row)), abs=1e-6)


def hf_text_embeds(model, tokenizer, sentences, **tokenize):
    with torch.no_grad():
        out = model.get_text_features(**tokenizer(sentences, padding=True, return_tensors="pt", **tokenize))
    embeds = getattr(out, "pooler_output", out)
    return embeds / embeds.norm(dim=-1, keepdim=True)


def hf_scores(model, processor, image, text_embeds):
    with torch.no_grad():
        out = model.get_image_features(**processor(images=[image], return_tensors="pt"))
    pictures = getattr(out, "pooler_output", out)
    pictures = pictures / pictures.norm(dim=-1, keepdim=True)
    return (model.logit_scale.exp() * pictures @ text_embeds.T).softmax(-1)[0].tolist()


def test_template_list_averages_unit_embeddings_per_label(folders, images):
    folder = folders["quick_gelu"]
    model, processor = transformers.CLIPModel.from_pretrained(folder).eval(), transformers.CLIPProcessor.from_pretrained(folder)
    templates = ["a photo of a {}.", "a drawing of the {}", "{}"]
    per_template = torch.stack([hf_text_embeds(model, processor.tokenizer, [t.format(x) for x in LABELS])
                                for t in templates])  # (T, L, D)
    ensemble = per_template.mean(0)
    ensemble = ensemble / ensemble.norm(dim=-1, keepdim=True)
    ours = pipeline(TASK, model=folder)
    for image in images[:3]:
        expected = hf_scores(model, processor, image, ensemble)
        got = {r["label"]: r["score"] for r in ours(image, candidate_labels=LABELS, hypothesis_template=templates)}
        assert got == pytest.approx(dict(zip(LABELS, expected)), abs=1e-5)
    # a list of one template is that template
    assert_same(ours(images[0], candidate_labels=LABELS, hypothesis_template=["a photo of a {}."]),
                ours(images[0], candidate_labels=LABELS, hypothesis_template="a photo of a {}."), atol=0)


def test_label_embeddings_are_computed_once_per_label_and_templates(folders, images):
    ours = pipeline(TASK, model=folders["quick_gelu"], batch_size=2)
    seen = []
    real = ours.model.get_text_features

    def counting(input_ids, attention_mask=None, **kw):
        seen.append(input_ids.shape[0])
        return real(input_ids, attention_mask, **kw)

    ours.model.get_text_features = counting
    first = ours(images, candidate_labels=LABELS)
    assert sum(seen) == len(LABELS)  # every label once, not once per image
    seen.clear()
    assert ours(images, candidate_labels=LABELS) == first and seen == []  # all from the cache
    again = ours(images[:2], candidate_labels=LABELS[::-1])  # same labels, other order: still cached
    assert seen == []
    assert_same(again[0], first[0], atol=1e-6)
    ours(images[0], candidate_labels=[*LABELS, "boat"])
    assert seen == [1]  # only the new label
    seen.clear()
    ours(images[0], candidate_labels=LABELS, hypothesis_template=["{}", "a {}"])
    assert sum(seen) == 2 * len(LABELS)  # other templates: other embeddings


def long_label(words):
    return " ".join(["a photo of something quite large and"] * words) + " red"


def test_long_texts_are_cut_to_the_context_with_a_warning(folders, images):
    folder = folders["short"]  # a 12-token context
    labels = ["cat", long_label(3), "dog"]
    model, processor = transformers.CLIPModel.from_pretrained(folder).eval(), transformers.CLIPProcessor.from_pretrained(folder)
    text = hf_text_embeds(model, processor.tokenizer, [f"This is a photo of {x}." for x in labels],
                          truncation=True, max_length=12)
    ours = pipeline(TASK, model=folder)
    with pytest.warns(LongTextWarning, match="longer than the text tower's 12 tokens"):
        got = ours(images[0], candidate_labels=labels)
    expected = hf_scores(model, processor, images[0], text)
    assert {r["label"]: r["score"] for r in got} == pytest.approx(dict(zip(labels, expected)), abs=1e-5)


def interpolate_rows(table, length):
    """Linear interpolation of a (N, d) table to (length, d), cell centres on cell centres (NumPy)."""
    old = table.shape[0]
    source = np.clip((np.arange(length) + 0.5) * old / length - 0.5, 0, old - 1)
    return np.stack([np.interp(source, np.arange(old), column) for column in table.T], axis=1)


def test_stretch_context_reads_long_texts_whole_with_an_interpolated_position_table(folders, images):
    folder = folders["short"]
    labels = ["cat", long_label(3), "dog"]
    sentences = [f"This is a photo of {x}." for x in labels]
    model, processor = transformers.CLIPModel.from_pretrained(folder).eval(), transformers.CLIPProcessor.from_pretrained(folder)
    length = max(len(ids) for ids in processor.tokenizer(sentences)["input_ids"])
    assert 24 < length <= 36  # stretch_context=True takes whole multiples of the context: 36
    table = model.text_model.embeddings.position_embedding.weight.detach().numpy()
    stretched = torch.tensor(interpolate_rows(table, 36), dtype=torch.float32)
    model.text_model.embeddings.position_embedding = torch.nn.Embedding.from_pretrained(stretched)
    model.text_model.embeddings.position_ids = torch.arange(36)[None]
    expected = hf_scores(model, processor, images[1], hf_text_embeds(model, processor.tokenizer, sentences))

    ours = pipeline(TASK, model=folder, stretch_context=True)
    before = pipeline(TASK, model=folder)(images[1], candidate_labels=["cat", "dog"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is cut
        got = ours(images[1], candidate_labels=labels)
    assert {r["label"]: r["score"] for r in got} == pytest.approx(dict(zip(labels, expected)), abs=1e-5)
    # the loaded model is left as it was: short labels score as before, the image tower is shared
    assert ours.model.config.text_config.max_position_embeddings == 12
    assert_same(ours(images[1], candidate_labels=["cat", "dog"]), before, atol=1e-6)
    assert ours._stretched[1].vision_model is ours.model.vision_model
    # an explicit length must hold the longest sentence
    with pytest.raises(ConfigError, match="shorter than a sentence"):
        ours(images[1], candidate_labels=labels, stretch_context=length - 1)


def test_sixteen_bit_and_odd_images_run(folders):
    ours = pipeline(TASK, model=folders["quick_gelu"])
    deep = Image.fromarray(np.full((30, 40), 50000, dtype=np.uint16))
    tiny = Image.new("RGB", (3, 5), (200, 10, 10))
    for result in ours([deep, tiny], candidate_labels=LABELS):
        assert sum(r["score"] for r in result) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"candidate_labels": []}, "candidate_labels is empty"),
    ({"candidate_labels": None}, "needs candidate_labels"),
    ({"candidate_labels": "cat"}, "must be a list of label names"),
    ({"candidate_labels": ["cat", "dog", "cat"]}, "duplicates \\['cat'\\]"),
    ({"candidate_labels": ["cat", ""]}, "non-empty string"),
    ({"candidate_labels": ["cat", 3]}, "non-empty string"),
    ({"candidate_labels": LABELS, "hypothesis_template": "a photo"}, "must contain '\\{\\}'"),
    ({"candidate_labels": LABELS, "hypothesis_template": "a {} of {}"}, "must contain"),
    ({"candidate_labels": LABELS, "hypothesis_template": "a {x}"}, "must contain"),
    ({"candidate_labels": LABELS, "hypothesis_template": []}, "non-empty list"),
    ({"candidate_labels": LABELS, "stretch_context": 0}, "stretch_context"),
    ({"candidate_labels": LABELS, "batch_size": 0}, "batch_size"),
])
def test_bad_arguments_raise_config_errors(folders, images, kwargs, message):
    ours = pipeline(TASK, model=folders["quick_gelu"])
    with pytest.raises(ConfigError, match=message):
        ours(images[0], **kwargs)


def test_bad_calls_and_models_raise_config_errors(folders, images):
    from polyformer.models import from_pretrained

    ours = pipeline(TASK, model=folders["quick_gelu"])
    with pytest.raises(ConfigError, match="needs an image"):
        ours(candidate_labels=LABELS)
    with pytest.raises(ConfigError, match="not both"):
        ours(images[0], images=images[0], candidate_labels=LABELS)
    with pytest.raises(ConfigError, match="no images"):
        ours([], candidate_labels=LABELS)
    with pytest.raises(ConfigError, match="needs processor="):
        pipeline(TASK, model=from_pretrained(folders["quick_gelu"]))
    with pytest.raises(ConfigError, match="both towers"):
        pipeline(TASK, model=torch.nn.Linear(2, 2), processor=ours.processor)
    with pytest.raises(ConfigError, match="tokenizer and an image processor"):
        pipeline(TASK, model=ours.model, processor=ours.image_processor)
