"""The generate loop shared by every decoder-only model (GPT-2/Neo/J, image GPT, ...).

A model takes part through a small protocol (:class:`CausalLM`): ``new_caches()`` gives its
decoding state (whatever each attention mechanism keeps: a key/value buffer, a recurrent state),
and a call ``model(input_ids, caches=, [attention_mask=, position_ids=, logits_to_keep=])`` returns
an object with ``.logits`` (B, T, V). ``attention_mask`` and ``position_ids`` are passed only for
left-padded batches, ``logits_to_keep=1`` only if ``forward`` has that parameter. The prompt goes
through in one call, then one token per step.

Batches are left-padded: ``attention_mask`` (B, T) has its zeros on the left. Each row's positions
then start at its first real token, so a padded row generates exactly what it generates alone.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import torch
from torch import Tensor

from polyformer.errors import ConfigError, ShapeError
from polyformer.generation.sampling import SamplingOptions, choose_next
from polyformer.generation.stopping import StopStrings
from polyformer.options import require


class CausalLM(Protocol):
    """What :func:`generate` needs from a model."""

    def new_caches(self) -> Any: ...

    def __call__(self, input_ids: Tensor, *, attention_mask: Tensor | None, position_ids: Tensor | None,
                 caches: Any, logits_to_keep: int) -> Any: ...


class Streamer(Protocol):
    """Receives each step's tokens as they are chosen (``None`` for rows already finished)."""

    def put(self, tokens: list[int | None]) -> None: ...

    def end(self) -> None: ...


@dataclass
class GenerationConfig:
    """How many tokens, how to choose them, and when to stop.

    ``max_new_tokens``; sampling (``do_sample``, ``temperature``, ``top_k``, ``top_p``; see
    :class:`~polyformer.generation.sampling.SamplingOptions`); ``seed`` makes sampling reproducible
    (or pass a ``torch.Generator``); ``eos_token_id`` (one id or several) ends a row;
    ``stop_strings`` end a row when its decoded text contains one (needs ``decode``);
    ``pad_token_id`` fills finished rows (None = the first eos id, else 0); ``truncate``: when the
    prompt plus ``max_new_tokens`` exceed the model's context, keep only the prompt's last tokens
    instead of raising. ``prompt_lookup_tokens`` > 0 (greedy, one prompt): guess up to that many
    tokens per step by prompt lookup over the last ``prompt_lookup_ngram`` tokens and check them in
    one call (see :mod:`polyformer.generation.speculative`).
    """

    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    eos_token_id: int | Sequence[int] | None = None
    pad_token_id: int | None = None
    stop_strings: Sequence[str] = field(default_factory=tuple)
    truncate: bool = False
    prompt_lookup_tokens: int = 0
    prompt_lookup_ngram: int = 3

    def __post_init__(self) -> None:
        require(isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1,
                f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        require(self.seed is None or isinstance(self.seed, int), f"seed must be an integer or None, got {self.seed!r}")
        if isinstance(self.stop_strings, str):
            self.stop_strings = (self.stop_strings,)
        self.stop_strings = tuple(self.stop_strings)
        self.sampling  # validates the sampling fields
        require(isinstance(self.prompt_lookup_tokens, int) and self.prompt_lookup_tokens >= 0,
                f"prompt_lookup_tokens must be an integer >= 0 (0 = off), got {self.prompt_lookup_tokens!r}")
        require(isinstance(self.prompt_lookup_ngram, int) and self.prompt_lookup_ngram >= 1,
                f"prompt_lookup_ngram must be an integer >= 1, got {self.prompt_lookup_ngram!r}")
        require(not (self.prompt_lookup_tokens and self.do_sample),
                "prompt_lookup_tokens speeds up greedy decoding only; set do_sample=False or prompt_lookup_tokens=0")

    @property
    def sampling(self) -> SamplingOptions:
        return SamplingOptions(self.do_sample, self.temperature, self.top_k, self.top_p)

    @property
    def eos_ids(self) -> frozenset[int]:
        if self.eos_token_id is None:
            return frozenset()
        if isinstance(self.eos_token_id, int):
            return frozenset([self.eos_token_id])
        return frozenset(int(i) for i in self.eos_token_id)


@dataclass
class GenerationOutput:
    """``sequences`` (B, T + steps): the prompt as given (padding included) then the new tokens
    (``pad_token_id`` after a row finished). ``new_tokens``: each row's generated ids, up to and
    including its eos. ``stopped_by``: "eos", "stop_string" or "length" per row. ``prompt_length``:
    columns of ``sequences`` that hold the (possibly truncated) prompt."""

    sequences: Tensor
    new_tokens: list[list[int]]
    stopped_by: list[str]
    prompt_length: int


def left_padding_positions(attention_mask: Tensor) -> Tensor:
    """(B, T) positions counting from each row's first real token (0 on padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def check_left_padded(attention_mask: Tensor) -> None:
    """Raise a ShapeError unless every row is ``0 ... 0 1 ... 1``."""
    mask = attention_mask.bool()
    if mask.shape[-1] > 1 and (mask[:, :-1] & ~mask[:, 1:]).any():
        raise ShapeError(
            "generation needs left padding (padding before the prompt, attention_mask 0…0 1…1), but a "
            "row has padding after a real token; pad on the left (tokenizer padding_side='left')"
        )
    if not mask.any(dim=-1).all():
        raise ShapeError("attention_mask has a row without any real token; every prompt needs at least one")


def _fit_context(input_ids: Tensor, mask: Tensor | None, config: GenerationConfig, limit: int | None):
    """The prompt, cut to its last tokens if it and the new tokens exceed the context and truncation is on."""
    if limit is None or input_ids.shape[1] + config.max_new_tokens <= limit:
        return input_ids, mask
    room = limit - config.max_new_tokens
    if not config.truncate or room < 1:
        hint = (f"lower max_new_tokens below {limit}" if room < 1 else
                f"pass truncate=True to keep the prompt's last {room} tokens, or lower max_new_tokens")
        raise ShapeError(
            f"the prompt has {input_ids.shape[1]} tokens and max_new_tokens={config.max_new_tokens}: "
            f"{input_ids.shape[1] + config.max_new_tokens} positions exceed the model's context of {limit}; {hint}"
        )
    input_ids = input_ids[:, -room:]
    mask = None if mask is None else mask[:, -room:]
    if mask is not None and not mask.bool().any(dim=-1).all():
        raise ShapeError(f"after truncation to {room} tokens a prompt row is only padding; lower max_new_tokens")
    return input_ids, mask


def _model_call(model: CausalLM, caches: Any) -> Callable[[Tensor, Tensor | None, Tensor | None], Tensor]:
    """``(ids, mask, positions) -> (B, V)`` last-position logits; passes only what is needed and
    ``logits_to_keep=1`` when the model accepts it (so a minimal ``forward(input_ids, caches=)``
    works for unpadded batches)."""
    try:
        parameters = inspect.signature(model.forward if hasattr(model, "forward") else model).parameters
    except (TypeError, ValueError):
        parameters = {}
    keep_last = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}

    def call(ids: Tensor, mask: Tensor | None, positions: Tensor | None) -> Tensor:
        extra: dict[str, Any] = dict(keep_last)
        if mask is not None:
            extra["attention_mask"] = mask
        if positions is not None:
            extra["position_ids"] = positions
        return model(ids, caches=caches, **extra).logits[:, -1]

    return call


@torch.inference_mode()
def generate(
    model: CausalLM,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    config: GenerationConfig | None = None,
    *,
    decode: Callable[[list[int]], str] | None = None,
    streamer: Streamer | None = None,
    generator: torch.Generator | None = None,
    **options: Any,
) -> GenerationOutput:
    """Continue each prompt row of ``input_ids`` (B, T) with up to ``max_new_tokens`` tokens.

    ``config`` and/or keyword ``options`` (fields of :class:`GenerationConfig`) say how.
    ``decode`` (token ids -> text) is needed for ``stop_strings``; ``streamer`` receives tokens as
    they come; ``generator`` (or ``seed``) drives sampling.
    """
    try:
        config = dataclasses.replace(config or GenerationConfig(), **options)
    except TypeError as error:
        known = ", ".join(f.name for f in dataclasses.fields(GenerationConfig))
        raise ConfigError(f"generate: {error}; valid options: {known}") from None
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
        raise ShapeError(f"input_ids must be an integer tensor (batch, length), got "
                         f"{getattr(input_ids, 'shape', type(input_ids).__name__)}")
    if input_ids.shape[1] == 0:
        raise ShapeError("input_ids is empty: generation needs at least one prompt token (e.g. the bos token)")
    if attention_mask is not None:
        if tuple(attention_mask.shape) != tuple(input_ids.shape):
            raise ShapeError(f"attention_mask must match input_ids {tuple(input_ids.shape)}, got "
                             f"{tuple(attention_mask.shape)}")
        check_left_padded(attention_mask)
    input_ids, attention_mask = _fit_context(input_ids, attention_mask, config, getattr(model, "max_positions", None))
    stops = StopStrings(config.stop_strings, decode)
    if generator is None and config.seed is not None:
        generator = torch.Generator(input_ids.device).manual_seed(config.seed)
    pad = config.pad_token_id if config.pad_token_id is not None else min(config.eos_ids, default=0)

    b, t = input_ids.shape
    device = input_ids.device
    padded = attention_mask is not None and not bool(attention_mask.bool().all())
    full_mask = position_ids = next_position = None
    if padded:
        # One mask for every step; each step passes a view of its first columns.
        full_mask = torch.ones(b, t + config.max_new_tokens, dtype=torch.bool, device=device)
        full_mask[:, :t] = attention_mask.bool()  # type: ignore[union-attr]
        position_ids = left_padding_positions(attention_mask)  # type: ignore[arg-type]
        next_position = attention_mask.long().sum(-1, keepdim=True)  # type: ignore[union-attr]  # (B, 1)

    caches = model.new_caches()
    call = _model_call(model, caches)
    logits = call(input_ids, None if full_mask is None else full_mask[:, :t], position_ids)  # (B, V)
    if config.prompt_lookup_tokens:
        return _generate_with_prompt_lookup(model, caches, input_ids, logits, config, stops, streamer, padded)
    step_inputs = _StepInputs(full_mask, next_position, t)
    return _decode(call, input_ids, logits, config, step_inputs, stops, streamer, generator, pad)


@dataclass
class _StepInputs:
    """What a decoding step passes besides the token: a view of the full mask and the positions
    (left-padded batches only; both None otherwise)."""

    full_mask: Tensor | None
    next_position: Tensor | None  # (B, 1) position of the first new token in each row
    prompt_length: int

    def at(self, step: int) -> tuple[Tensor | None, Tensor | None]:
        """Mask and positions for the token chosen at ``step`` (0-based)."""
        if self.full_mask is None:
            return None, None
        return self.full_mask[:, : self.prompt_length + step + 1], self.next_position + step  # type: ignore[operator]


def _decode(call, input_ids, logits, config, step_inputs, stops, streamer, generator, pad) -> GenerationOutput:
    """The token-by-token loop: choose, record and stop per row, then feed the chosen tokens."""
    b, t = input_ids.shape
    eos, sampling = config.eos_ids, config.sampling
    generated = input_ids.new_full((b, config.max_new_tokens), pad)
    new_tokens: list[list[int]] = [[] for _ in range(b)]
    stopped_by = ["length"] * b
    finished = [False] * b
    steps = 0
    for step in range(config.max_new_tokens):
        tokens = choose_next(logits, sampling, generator)  # (B,)
        chosen = tokens.tolist()
        streamed: list[int | None] = []
        for row, token in enumerate(chosen):
            if finished[row]:
                chosen[row] = pad
                streamed.append(None)
                continue
            new_tokens[row].append(token)
            streamed.append(token)
            if token in eos:
                finished[row], stopped_by[row] = True, "eos"
            elif stops and stops.hit(row, new_tokens[row]):
                finished[row], stopped_by[row] = True, "stop_string"
        if any(finished):
            tokens = torch.tensor(chosen, dtype=input_ids.dtype, device=input_ids.device)
        generated[:, step] = tokens
        steps = step + 1
        if streamer is not None:
            streamer.put(streamed)
        if all(finished) or steps == config.max_new_tokens:
            break
        logits = call(tokens[:, None], *step_inputs.at(step))  # (B, V)
    if streamer is not None:
        streamer.end()
    sequences = torch.cat([input_ids, generated[:, :steps]], dim=1)
    return GenerationOutput(sequences=sequences, new_tokens=new_tokens, stopped_by=stopped_by, prompt_length=t)


def _generate_with_prompt_lookup(model, caches, input_ids, first_logits, config, stops, streamer, padded):
    """The batch-1 greedy loop with speculation (see :mod:`polyformer.generation.speculative`)."""
    from polyformer.generation.speculative import can_speculate, greedy_with_prompt_lookup

    if input_ids.shape[0] != 1 or padded:
        raise ConfigError(f"prompt_lookup_tokens works on one prompt at a time, got a batch of {input_ids.shape[0]}; "
                          "generate each prompt alone or set prompt_lookup_tokens=0")
    if not can_speculate(model, caches):
        raise ConfigError("prompt_lookup_tokens needs caches that can forget rejected guesses (key/value caches); "
                          "this model's attention keeps a running state: set prompt_lookup_tokens=0")

    def put(token: int) -> None:
        if streamer is not None:
            streamer.put([token])

    new, stopped = greedy_with_prompt_lookup(
        model, caches, input_ids[0].tolist(), first_logits[0], max_new_tokens=config.max_new_tokens,
        guesses=config.prompt_lookup_tokens, max_ngram=config.prompt_lookup_ngram, eos=config.eos_ids,
        stops=stops, put=put,
    )
    if streamer is not None:
        streamer.end()
    sequences = torch.cat([input_ids, torch.tensor([new], dtype=input_ids.dtype, device=input_ids.device)], dim=1)
    return GenerationOutput(sequences=sequences, new_tokens=[new], stopped_by=[stopped], prompt_length=input_ids.shape[1])
