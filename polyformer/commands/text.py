"""Text-encoder commands, one per pipeline, all on a model folder (``--model DIR``):

* ``polyformer classify-text --model DIR "text" ...`` — best classes (text-classification);
* ``polyformer tag-text --model DIR "text" ...`` — entities (token-classification);
* ``polyformer fill-mask --model DIR "Paris is the [MASK] of France."`` — likeliest fillers;
* ``polyformer answer --model DIR --question Q --context C`` — an answer span (question-answering);
* ``polyformer embed --model DIR --out emb.npy "text" ...`` — one vector per text, pooled as
  sentence-transformers pools (a folder it saved says how: mean or [CLS], normalised or not);
* ``polyformer train text-topics --out DIR`` — the BERT recipe (:mod:`polyformer.recipes.text`).

Texts are the arguments, or the lines of ``--file PATH`` (``-``: standard input). Every command
prints a readable table, or JSON with ``--json`` (the pipeline's output as Hugging Face writes it),
and takes ``--batch-size`` and ``--attention`` (run the model with another attention mechanism).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from polyformer.errors import ConfigError, DataError
from polyformer.files import atomic_write_bytes

__all__ = ["add_parser", "read_texts", "sentence_defaults"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    classify = subparsers.add_parser("classify-text", help="classes of texts with a text classifier folder",
                                     description="Example: polyformer classify-text --model runs/topics "
                                     "'Who won the match?' 'It will rain tomorrow.'")
    _common(classify, "a sequence classifier")
    classify.add_argument("--top-k", type=int, default=1, help="classes to show per text (default 1)")
    classify.add_argument("--pair", action="append", default=None, metavar="TEXT",
                          help="second text of each pair (repeat once per text), for pair classifiers")
    classify.set_defaults(func=run_classify)

    tag = subparsers.add_parser("tag-text", help="entities in texts with a token classifier folder (NER)")
    _common(tag, "a token classifier")
    tag.add_argument("--aggregation", default="simple", choices=["none", "simple", "first", "average", "max"],
                     help="how tokens merge into entities (default simple)")
    tag.add_argument("--stride", type=int, default=None,
                     help="read texts longer than the model's limit in windows overlapping by this many tokens")
    tag.set_defaults(func=run_tag)

    fill = subparsers.add_parser("fill-mask", help="likeliest words for the [MASK] of texts (masked LM folder)")
    _common(fill, "a masked language model")
    fill.add_argument("--top-k", type=int, default=5, help="fillers per mask (default 5)")
    fill.add_argument("--targets", nargs="+", default=None, help="only score these words")
    fill.set_defaults(func=run_fill)

    answer = subparsers.add_parser("answer", help="answer a question from a context (extractive QA folder)")
    answer.add_argument("--model", required=True, type=Path, help="question-answering model folder with its tokenizer")
    answer.add_argument("--question", required=True, action="append", help="the question (repeatable)")
    given = answer.add_mutually_exclusive_group(required=True)
    given.add_argument("--context", help="the text that holds the answer")
    given.add_argument("--context-file", type=Path, help="read the context from this file")
    answer.add_argument("--top-k", type=int, default=1, help="answers per question (default 1)")
    answer.add_argument("--max-answer-len", type=int, default=15, help="longest answer in tokens (default 15)")
    answer.add_argument("--allow-no-answer", action="store_true", help="the empty answer competes (SQuAD 2.0 models)")
    _shared_options(answer)
    answer.set_defaults(func=run_answer)

    embed = subparsers.add_parser("embed", help="sentence embeddings of texts (mean-pooled, as sentence-transformers)",
                                  description="Example: polyformer embed --model all-MiniLM-L6-v2 --out emb.npy "
                                  "'A man plays a guitar.' 'Someone plays an instrument.'")
    _common(embed, "an encoder (e.g. all-MiniLM-L6-v2)")
    embed.add_argument("--out", type=Path, default=None, help="write the (texts, hidden) float32 array here (.npy)")
    embed.add_argument("--pooling", choices=["mean", "cls"], default=None,
                       help="mean over tokens or the [CLS] vector (default: the folder's 1_Pooling, else mean)")
    embed.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                       help="scale each vector to unit length (default: as the folder's modules.json says, else no)")
    embed.add_argument("--max-length", type=int, default=None,
                       help="cut texts to this many tokens (default: the folder's max_seq_length, else the tokenizer's)")
    embed.set_defaults(func=run_embed)

    from polyformer.commands.train import train_group

    topics = train_group(subparsers).add_parser(
        "text-topics", help="fine-tune MiniLM (or a small BERT from scratch) to classify sentence topics",
        description="Generated sentences about sport, food, weather and technology; reports accuracy on held-out "
        "templates and on topic words never seen in training. The folder written to --out goes straight into "
        "polyformer classify-text. Example: polyformer train text-topics --out runs/topics")
    topics.add_argument("--out", type=Path, default=Path("runs/text-topics"), help="model folder to write")
    topics.add_argument("--init", default="minilm",
                        help="encoder to fine-tune: 'minilm' (the wheel's all-MiniLM-L6-v2), a BERT folder, or "
                        "'scratch' for a small random BERT")
    topics.add_argument("--epochs", type=float, default=None, help="passes over the training sentences "
                        "(default 3 fine-tuning, 12 from scratch)")
    topics.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-4 / 3e-3 from scratch)")
    topics.add_argument("--batch-size", type=int, default=None, help="sentences per step (default 32)")
    topics.add_argument("--attention", default=None, help="attention mechanism of every layer (default dense)")
    topics.add_argument("--threads", type=int, default=None, help="torch threads (default 2)")
    topics.add_argument("--time-budget", type=float, default=None, help="stop training after this many seconds")
    topics.add_argument("--seed", type=int, default=None)
    topics.add_argument("--quiet", action="store_true", help="no progress bar")
    topics.set_defaults(func=run_train_topics)


def _shared_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=8, help="texts per forward pass (default 8)")
    parser.add_argument("--attention", default=None, help="run with another attention mechanism (e.g. memory_efficient)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _common(parser: argparse.ArgumentParser, kind: str) -> None:
    parser.add_argument("texts", nargs="*", help="texts (or use --file)")
    parser.add_argument("--model", required=True, type=Path, help=f"folder of {kind} with its tokenizer")
    parser.add_argument("--file", type=Path, default=None, help="read one text per line from this file (- for stdin)")
    _shared_options(parser)


def read_texts(texts: list[str], file: Path | None) -> list[str]:
    """The texts given as arguments followed by the non-empty lines of ``file`` (``-``: standard input)."""
    out = list(texts)
    if file is not None:
        if str(file) == "-":
            lines = sys.stdin.read().splitlines()
        elif not file.is_file():
            raise DataError(f"{file}: no such file; --file takes a text file with one text per line")
        else:
            try:
                lines = file.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError:
                raise DataError(f"{file} is not UTF-8 text; --file takes one text per line") from None
        out.extend(line for line in lines if line.strip())
    if not out:
        raise DataError("no texts: give them as arguments or with --file PATH (one per line)")
    if any(not t.strip() for t in out):
        raise DataError("a text is empty; give every text at least one word")
    return out


def _pipeline(task: str, args: argparse.Namespace, **options: Any) -> Any:
    """The task's pipeline on ``--model`` (with ``--attention`` when given)."""
    from polyformer.pipelines import pipeline

    if not args.model.is_dir():
        raise DataError(f"{args.model}: no such model folder; --model takes a folder with config.json, "
                        "model.safetensors and the tokenizer files")
    options["batch_size"] = args.batch_size
    if args.attention:
        from polyformer.models import from_pretrained

        return pipeline(task, model=from_pretrained(args.model, attention=args.attention), tokenizer=args.model,
                        **options)
    return pipeline(task, model=args.model, **options)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def run_classify(args: argparse.Namespace) -> int:
    texts = read_texts(args.texts, args.file)
    inputs: list[Any] = texts
    if args.pair is not None:
        if len(args.pair) != len(texts):
            raise DataError(f"{len(texts)} text(s) but {len(args.pair)} --pair value(s); give one --pair per text")
        inputs = [{"text": t, "text_pair": p} for t, p in zip(texts, args.pair)]
    results = _pipeline("text-classification", args, truncation=True)(inputs, top_k=args.top_k)
    if args.json:
        _print_json([{"text": t, "predictions": r} for t, r in zip(texts, results)])
        return 0
    for text, predictions in zip(texts, results):
        print(text)
        width = max(len(p["label"]) for p in predictions)
        for p in predictions:
            print(f"  {p['label']:<{width}}  {p['score']:.4f}")
    return 0


def run_tag(args: argparse.Namespace) -> int:
    texts = read_texts(args.texts, args.file)
    results = _pipeline("token-classification", args, aggregation_strategy=args.aggregation, stride=args.stride)(texts)
    results = [[{k: (float(v) if isinstance(v, np.floating) else v) for k, v in e.items()} for e in r] for r in results]
    if args.json:
        _print_json([{"text": t, "entities": r} for t, r in zip(texts, results)])
        return 0
    for text, entities in zip(texts, results):
        print(text)
        if not entities:
            print("  (no entities)")
        for e in entities:
            print(f"  {e.get('entity_group', e.get('entity'))!s:<10} {e['score']:.4f}  {e['start']:>4}-{e['end']:<4} "
                  f"{text[e['start']:e['end']]}")
    return 0


def run_fill(args: argparse.Namespace) -> int:
    texts = read_texts(args.texts, args.file)
    fill = _pipeline("fill-mask", args)
    results = fill(texts, top_k=args.top_k, targets=args.targets)
    results = [results] if len(texts) == 1 else results
    if args.json:
        _print_json([{"text": t, "fillers": r} for t, r in zip(texts, results)])
        return 0
    for text, fillers in zip(texts, results):
        print(text)
        per_mask = fillers if fillers and isinstance(fillers[0], list) else [fillers]
        for number, row in enumerate(per_mask, start=1):
            if len(per_mask) > 1:
                print(f"  mask {number}:")
            for f in row:
                print(f"  {f['score']:.4f}  {f['token_str']:<15} {f['sequence']}")
    return 0


def run_answer(args: argparse.Namespace) -> int:
    if args.context_file is not None:
        if not args.context_file.is_file():
            raise DataError(f"{args.context_file}: no such file; --context-file takes a text file")
        context = args.context_file.read_text(encoding="utf-8")
    else:
        context = args.context
    qa = _pipeline("question-answering", args, max_answer_len=args.max_answer_len,
                   handle_impossible_answer=args.allow_no_answer)
    results = qa(question=args.question, context=[context] * len(args.question), top_k=args.top_k)
    results = [r if isinstance(r, list) else [r] for r in results]
    if args.json:
        _print_json([{"question": q, "answers": r} for q, r in zip(args.question, results)])
        return 0
    for question, answers in zip(args.question, results):
        print(question)
        for a in answers:
            print(f"  {a['score']:.4f}  {a['answer'] or '(no answer)'}  [{a['start']}:{a['end']}]")
    return 0


def sentence_defaults(folder: Path) -> dict[str, Any]:
    """What a sentence-transformers folder says about pooling: ``pooling``, ``normalize``, ``max_length``.

    Read from ``1_Pooling/config.json`` (mean or [CLS]), ``modules.json`` (a Normalize module) and
    ``sentence_bert_config.json`` (``max_seq_length``); a plain model folder gives no settings.
    """
    out: dict[str, Any] = {}
    pooling = folder / "1_Pooling" / "config.json"
    if pooling.is_file():
        settings = _read_json(pooling)
        if settings.get("pooling_mode_cls_token"):
            out["pooling"] = "cls"
        elif settings.get("pooling_mode_mean_tokens"):
            out["pooling"] = "mean"
        else:
            modes = sorted(k for k, v in settings.items() if k.startswith("pooling_mode") and v)
            raise ConfigError(f"{pooling}: pooling {modes} is not supported; polyformer embed pools by mean or "
                              "[CLS] (pass --pooling mean or --pooling cls)")
    modules = folder / "modules.json"
    if modules.is_file():
        entries = _read_json(modules)
        out["normalize"] = any(str(m.get("type", "")).endswith("Normalize") for m in entries if isinstance(m, dict))
    sentence = folder / "sentence_bert_config.json"
    if sentence.is_file() and isinstance(_read_json(sentence).get("max_seq_length"), int):
        out["max_length"] = _read_json(sentence)["max_seq_length"]
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not valid JSON ({error}); write it again, or pass --pooling / --normalize") from None


def run_embed(args: argparse.Namespace) -> int:
    texts = read_texts(args.texts, args.file)
    if args.out is not None and args.out.suffix != ".npy":
        raise ConfigError(f"--out {args.out}: embeddings are written as a NumPy .npy file; end the name in .npy")
    defaults = sentence_defaults(args.model) if args.model.is_dir() else {}
    pooling = args.pooling or defaults.get("pooling", "mean")
    normalize = args.normalize if args.normalize is not None else defaults.get("normalize", False)
    max_length = args.max_length or defaults.get("max_length")
    if max_length is not None and max_length < 2:
        raise ConfigError(f"--max-length must be at least 2 ([CLS] and [SEP]), got {max_length}")
    tokenize = {"truncation": True, **({"max_length": max_length} if max_length else {})}
    encoder = _pipeline("feature-extraction", args, tokenize_kwargs=tokenize)
    vectors = encoder.embed(texts, pooling=pooling, normalize=normalize)
    if args.out is not None:
        buffer = io.BytesIO()
        np.save(buffer, vectors)
        atomic_write_bytes(args.out, buffer.getvalue())  # an interrupted run leaves no half-written file
        print(f"{len(texts)} embedding(s) of size {vectors.shape[1]} ({pooling} pooling"
              f"{', unit length' if normalize else ''}) written to {args.out}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        _print_json([{"text": t, "embedding": v.tolist()} for t, v in zip(texts, vectors)])
    elif args.out is None:
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
        similarity = unit @ unit.T
        print(f"cosine similarity of {len(texts)} text(s) ({pooling} pooling, size {vectors.shape[1]}):")
        for i, text in enumerate(texts):
            print("  " + " ".join(f"{s:6.3f}" for s in similarity[i]) + f"  {text[:60]}")
    return 0


def run_train_topics(args: argparse.Namespace) -> int:
    from polyformer.recipes.text import TextTopicsOptions, train_text_topics

    names = {"epochs": "epochs", "lr": "lr", "batch_size": "batch_size", "attention": "attention",
             "threads": "threads", "time_budget_s": "time_budget", "seed": "seed"}
    values = {field: getattr(args, arg) for field, arg in names.items() if getattr(args, arg) is not None}
    options = TextTopicsOptions(init=None if args.init == "scratch" else args.init, **values)
    result = train_text_topics(options, args.out, progress=not args.quiet)
    m = result.metrics
    print(f"text-topics ({m['init'] or 'from scratch'}): accuracy {m['val_accuracy']:.3f} on held-out templates, "
          f"{m['unseen_word_accuracy']:.3f} on unseen topic words, after {m['steps']} steps in "
          f"{m['train_seconds']:.0f} s ({m['threads']} threads)")
    print(f"model and tokenizer written to {args.out}; try: polyformer classify-text --model {args.out} "
          "'Will it snow tonight?'")
    return 0
