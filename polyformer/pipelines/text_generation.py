"""``pipeline("text-generation", model=...)``: prompts in, Hugging Face's output format out.

>>> generator = pipeline("text-generation", model="my-gpt2-folder")        # doctest: +SKIP
>>> generator("Once upon a time", max_new_tokens=20)                        # doctest: +SKIP
[{'generated_text': 'Once upon a time ...'}]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from polyformer.errors import ConfigError
from polyformer.generation import GenerationConfig, generate, trim_at_stop
from polyformer.pipelines import register_pipeline
from polyformer.processors.text import TextTokenizer


class TextGenerationPipeline:
    """A causal language model and its tokenizer; ``__call__`` continues prompts.

    Keyword arguments given when the pipeline is built become defaults of every call (fields of
    :class:`~polyformer.generation.GenerationConfig`, e.g. ``max_new_tokens=50``).
    """

    def __init__(self, model: Any, tokenizer: TextTokenizer, **defaults: Any) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        eos = getattr(getattr(model, "config", None), "eos_token_id", None)
        vocab = getattr(getattr(model, "config", None), "vocab_size", None)
        if eos is None or (vocab is not None and eos >= vocab):
            eos = tokenizer.eos_token_id
        self.defaults = GenerationConfig(**{"eos_token_id": eos, "pad_token_id": tokenizer.pad_token_id, **defaults})

    def __call__(
        self,
        text_inputs: str | Sequence[str],
        *,
        return_full_text: bool = True,
        num_return_sequences: int = 1,
        **options: Any,
    ) -> list[dict[str, str]] | list[list[dict[str, str]]]:
        """``[{"generated_text": ...}]`` for one prompt, a list of such lists for several.

        ``return_full_text`` puts the prompt before the new text (Hugging Face's default);
        ``num_return_sequences`` continues each prompt that many times (use with sampling);
        ``options``: ``max_new_tokens``, ``do_sample``, ``temperature``, ``top_k``, ``top_p``,
        ``seed``, ``stop_strings`` (text is cut before the first one), ``truncate``, ...
        """
        single = isinstance(text_inputs, str)
        prompts = [text_inputs] if single else list(text_inputs)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ConfigError("text-generation expects a prompt string or a non-empty list of strings")
        if not isinstance(num_return_sequences, int) or num_return_sequences < 1:
            raise ConfigError(f"num_return_sequences must be an integer >= 1, got {num_return_sequences!r}")
        repeated = [p for p in prompts for _ in range(num_return_sequences)]
        batch = self.tokenizer(repeated)
        device = next(self.model.parameters()).device
        out = generate(self.model, batch["input_ids"].to(device), batch["attention_mask"].to(device), self.defaults,
                       decode=self.tokenizer.decode, **options)
        stops = options.get("stop_strings", self.defaults.stop_strings)
        stops = (stops,) if isinstance(stops, str) else tuple(stops)
        records = []
        for prompt, tokens in zip(repeated, out.new_tokens):
            text, _ = trim_at_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), stops)
            records.append({"generated_text": prompt + text if return_full_text else text})
        grouped = [records[i : i + num_return_sequences] for i in range(0, len(records), num_return_sequences)]
        return grouped[0] if single else grouped


@register_pipeline("text-generation")
def text_generation(model: Any, tokenizer: TextTokenizer | str | Path | None = None, **defaults: Any) -> TextGenerationPipeline:
    """Build the pipeline from a model folder (model and tokenizer both read from it) or a loaded model."""
    if isinstance(model, (str, Path)):
        from polyformer.models import from_pretrained

        folder = Path(model)
        model = from_pretrained(folder)
        if tokenizer is None:
            tokenizer = folder
    if tokenizer is None:
        raise ConfigError("text-generation with a loaded model needs tokenizer=<a TextTokenizer or a folder with "
                          "tokenizer.json or vocab.json + merges.txt>")
    if isinstance(tokenizer, (str, Path)):
        tokenizer = TextTokenizer.from_pretrained(tokenizer)
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is not None and tokenizer.vocab_size > vocab:
        raise ConfigError(f"the tokenizer has {tokenizer.vocab_size} ids but the model only {vocab}; "
                          "they do not belong together")
    return TextGenerationPipeline(model, tokenizer, **defaults)
