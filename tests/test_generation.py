"""The generate loop: greedy equals Hugging Face's generate, left-padded batches equal single prompts,
the filters equal Hugging Face's warpers, seeded sampling is reproducible, and stopping works."""

from dataclasses import dataclass

import pytest
import torch

from polyformer import attention
from polyformer.attention import AttentionCache, AttentionMechanism, reference_attention
from polyformer.attention import registry as attention_registry
from polyformer.errors import ConfigError, ShapeError
from polyformer.generation import (
    GenerationConfig,
    SamplingOptions,
    choose_next,
    filter_logits,
    generate,
    top_k_filter,
    top_p_filter,
    trim_at_stop,
)
from polyformer.models.gpt import GPTConfig, GPTLMHeadModel
from _random_weights import randomise

transformers = pytest.importorskip("transformers")

VOCAB = 61


def _randomise(model, std=0.3):
    return randomise(model, std)


def _hf_pair(variant, tmp_path):
    if variant == "gpt2":
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=VOCAB, n_positions=48, n_embd=32, n_layer=2, n_head=4))
    elif variant == "gpt_neo":
        hf = transformers.GPTNeoForCausalLM(transformers.GPTNeoConfig(
            vocab_size=VOCAB, max_position_embeddings=48, hidden_size=32, num_layers=2, num_heads=4,
            attention_types=[[["global", "local"], 1]], window_size=5))
    else:
        hf = transformers.GPTJForCausalLM(transformers.GPTJConfig(
            vocab_size=VOCAB, n_positions=48, n_embd=32, n_layer=2, n_head=4, rotary_dim=4))
    hf = _randomise(hf)
    hf.generation_config.eos_token_id = None
    hf.save_pretrained(tmp_path)
    return hf, GPTLMHeadModel.from_pretrained(tmp_path)


def _prompts():
    return [torch.randint(1, VOCAB, (n,)) for n in (7, 3, 5)]


def _left_pad(prompts, pad=0):
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = p
        mask[row, width - len(p):] = 1
    return ids, mask


@pytest.mark.parametrize("variant", ["gpt2", "gpt_neo", "gptj"])
def test_greedy_equals_hf_generate_single_and_left_padded(variant, tmp_path):
    hf, ours = _hf_pair(variant, tmp_path)
    prompts = _prompts()
    ids, mask = _left_pad(prompts)
    expected = hf.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0)
    got = generate(ours, ids, mask, max_new_tokens=12)
    assert torch.equal(got.sequences, expected)
    for row, prompt in enumerate(prompts):  # each prompt alone gives the same continuation
        alone = generate(ours, prompt[None], max_new_tokens=12)
        assert alone.new_tokens[0] == got.new_tokens[row]


@dataclass
class _NoOptions:
    pass


class _ListCache(AttentionCache):
    """A cache that is not a KVCache: lists of per-step keys and values."""

    def __init__(self):
        self.keys, self.values = [], []

    def __len__(self):
        return sum(k.shape[-2] for k in self.keys)


class _RecomputeAttention(AttentionMechanism):
    """Dense attention with its own cache type (a stand-in for recurrent mechanisms)."""

    name = "_test_list_cache"
    Options = _NoOptions

    def attend(self, q, k, v, *, causal, key_padding_mask, bias, scale, q_offset):
        return reference_attention(q, k, v, causal=causal, key_padding_mask=key_padding_mask, scale=scale,
                                   q_offset=q_offset)

    def new_cache(self):
        return _ListCache()

    def forward_cached(self, q, k, v, cache, key_padding_mask=None, *, scale=None):
        cache.keys.append(k)
        cache.values.append(v)
        return self(q, torch.cat(cache.keys, -2), torch.cat(cache.values, -2), causal=True,
                    key_padding_mask=key_padding_mask, scale=scale)


def test_generation_uses_the_mechanisms_own_cache(monkeypatch):
    attention.list()
    monkeypatch.setitem(attention_registry._REGISTRY, _RecomputeAttention.name, _RecomputeAttention)
    config = GPTConfig(vocab_size=VOCAB, n_positions=48, d_model=32, n_layers=2, n_heads=4)
    dense = _randomise(GPTLMHeadModel(config))
    custom = GPTLMHeadModel(GPTConfig(**{**config.__dict__, "attention": _RecomputeAttention.name})).eval()
    custom.load_state_dict(dense.state_dict())
    assert isinstance(custom.new_caches()[0].self_attention, _ListCache)
    ids, mask = _left_pad(_prompts())
    assert torch.equal(generate(custom, ids, mask, max_new_tokens=8).sequences,
                       generate(dense, ids, mask, max_new_tokens=8).sequences)


# -- sampling ---------------------------------------------------------------------------------------
def test_filters_equal_hf_warpers():
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    logits = torch.randn(4, 50) * 3
    for k in (1, 5, 50):
        assert torch.equal(top_k_filter(logits, k), TopKLogitsWarper(k)(None, logits))
    for p in (0.05, 0.5, 0.9, 1.0):
        assert torch.equal(top_p_filter(logits, p), TopPLogitsWarper(p)(None, logits))
    options = SamplingOptions(do_sample=True, temperature=0.7, top_k=10, top_p=0.8)
    expected = TopPLogitsWarper(0.8)(None, TopKLogitsWarper(10)(None, TemperatureLogitsWarper(0.7)(None, logits)))
    torch.testing.assert_close(filter_logits(logits, options), expected)


def test_sampling_frequencies_follow_the_filtered_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])
    options = SamplingOptions(do_sample=True, temperature=0.8, top_k=4)
    expected = filter_logits(logits, options).softmax(-1)[0]
    generator = torch.Generator().manual_seed(1)
    draws = torch.stack([choose_next(logits, options, generator) for _ in range(6000)])
    frequencies = torch.bincount(draws[:, 0], minlength=6).float() / len(draws)
    assert frequencies[4:].sum() == 0  # outside the top 4
    torch.testing.assert_close(frequencies, expected, atol=0.02, rtol=0)


def test_seeded_sampling_is_reproducible_and_top_k_1_is_greedy():
    model = _randomise(GPTLMHeadModel(GPTConfig(vocab_size=VOCAB, n_positions=48, d_model=32, n_layers=2, n_heads=4)), 0.1)
    ids = torch.randint(1, VOCAB, (2, 4))
    sample = dict(max_new_tokens=15, do_sample=True, temperature=1.5)
    a = generate(model, ids, seed=3, **sample).sequences
    assert torch.equal(a, generate(model, ids, seed=3, **sample).sequences)
    assert not torch.equal(a, generate(model, ids, seed=4, **sample).sequences)
    generator = torch.Generator().manual_seed(3)
    assert torch.equal(a, generate(model, ids, generator=generator, **sample).sequences)
    greedy = generate(model, ids, max_new_tokens=15).sequences
    assert torch.equal(greedy, generate(model, ids, seed=0, max_new_tokens=15, do_sample=True, top_k=1).sequences)
    assert torch.equal(greedy, generate(model, ids, seed=0, max_new_tokens=15, do_sample=True, top_p=1e-6).sequences)


# -- stopping ---------------------------------------------------------------------------------------
def _model():
    return _randomise(GPTLMHeadModel(GPTConfig(vocab_size=VOCAB, n_positions=48, d_model=32, n_layers=2, n_heads=4)))


def _decode(ids):
    return "".join(chr(ord("a") + i % 26) for i in ids)


def test_eos_ends_a_row_and_pads_it():
    model = _model()
    ids, mask = _left_pad(_prompts())
    free = generate(model, ids, mask, max_new_tokens=10)
    eos = free.new_tokens[1][3]  # a token row 1 produces at its fourth step
    out = generate(model, ids, mask, max_new_tokens=10, eos_token_id=eos, pad_token_id=0)
    first = free.new_tokens[1].index(eos)
    assert out.new_tokens[1] == free.new_tokens[1][: first + 1] and out.stopped_by[1] == "eos"
    row = out.sequences[1, out.prompt_length + first + 1:]
    assert (row == 0).all()


def test_stop_strings_end_and_trim():
    model = _model()
    ids = torch.randint(1, VOCAB, (1, 4))
    free = generate(model, ids, max_new_tokens=12)
    text = _decode(free.new_tokens[0])
    stop = text[5:7]
    out = generate(model, ids, max_new_tokens=12, stop_strings=[stop], decode=_decode)
    assert out.stopped_by == ["stop_string"]
    generated = _decode(out.new_tokens[0])
    assert stop in generated and stop not in generated[:-1]  # stopped at the first token completing it
    assert trim_at_stop(generated, [stop]) == (text[: text.find(stop)], True)
    with pytest.raises(ConfigError, match="need a tokenizer"):
        generate(model, ids, max_new_tokens=3, stop_strings=["x"])


def test_streamer_sees_every_token_in_order():
    class Collect:
        def __init__(self):
            self.steps, self.ended = [], False

        def put(self, tokens):
            self.steps.append(tokens)

        def end(self):
            self.ended = True

    model = _model()
    ids, mask = _left_pad(_prompts())
    streamer = Collect()
    out = generate(model, ids, mask, max_new_tokens=6, streamer=streamer)
    assert streamer.ended and [list(r) for r in zip(*streamer.steps)] == out.new_tokens


# -- bad input --------------------------------------------------------------------------------------
def test_prompt_longer_than_the_context_says_so_and_offers_truncation():
    model = _model()  # context 48
    ids = torch.randint(1, VOCAB, (1, 45))
    with pytest.raises(ShapeError, match="exceed the model's context of 48; pass truncate=True to keep the prompt's last 38"):
        generate(model, ids, max_new_tokens=10)
    cut = generate(model, ids, max_new_tokens=10, truncate=True)
    assert cut.prompt_length == 38
    assert cut.new_tokens == generate(model, ids[:, -38:], max_new_tokens=10).new_tokens
    with pytest.raises(ShapeError, match="lower max_new_tokens below 48"):
        generate(model, ids, max_new_tokens=60, truncate=True)


def test_right_padding_and_bad_options_are_refused():
    model = _model()
    ids = torch.randint(1, VOCAB, (2, 5))
    mask = torch.ones(2, 5, dtype=torch.long)
    mask[1, -2:] = 0
    with pytest.raises(ShapeError, match="needs left padding"):
        generate(model, ids, mask)
    with pytest.raises(ConfigError, match="temperature must be a number > 0"):
        generate(model, ids, do_sample=True, temperature=0)
    with pytest.raises(ConfigError, match="top_p must be in"):
        GenerationConfig(top_p=1.5)
    with pytest.raises(ConfigError, match="valid options: max_new_tokens"):
        generate(model, ids, max_tokens=3)


def test_a_minimal_decoder_can_use_the_loop():
    """Another family (e.g. image GPT) needs only new_caches() and forward(input_ids, caches=)."""

    class Minimal(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def new_caches(self):
            return self.inner.new_caches()

        def forward(self, input_ids, caches=None):
            return self.inner(input_ids, caches=caches)

    model = _model()
    ids = torch.randint(1, VOCAB, (2, 4))
    got = generate(Minimal(model), ids, max_new_tokens=6, do_sample=True, seed=1)
    assert torch.equal(got.sequences, generate(model, ids, max_new_tokens=6, do_sample=True, seed=1).sequences)


# -- prompt-lookup speculation ----------------------------------------------------------------------
def test_propose_continuation_copies_what_followed_the_latest_match():
    from polyformer.generation.speculative import propose_continuation

    tokens = [1, 2, 3, 9, 1, 2, 3, 7, 8, 5, 1, 2, 3]
    assert propose_continuation(tokens, max_ngram=3, count=2) == [7, 8]  # latest earlier "1 2 3"
    assert propose_continuation([4, 5, 6], max_ngram=3, count=2) == []
    assert propose_continuation([5, 1, 5], max_ngram=2, count=4) == [1, 5]  # falls back to 1-grams
    # a short loop: the latest earlier "7 8" has three tokens after it, the first one five
    assert propose_continuation([7, 8, 9, 7, 8, 9, 7, 8], max_ngram=2, count=3) == [9, 7, 8]
    assert propose_continuation([7, 8, 9, 7, 8, 9, 7, 8], max_ngram=2, count=5) == [9, 7, 8, 9, 7]


def test_kv_cache_crop_forgets_the_latest_positions():
    from polyformer.attention import KVCache

    cache = KVCache()
    k = torch.randn(1, 2, 5, 4)
    cache.append(k, k)
    cache.crop(3)
    keys, _ = cache.append(k[:, :, :1] + 1, k[:, :, :1])
    assert len(cache) == 4 and torch.equal(keys[:, :, :3], k[:, :, :3]) and torch.equal(keys[:, :, 3:], k[:, :, :1] + 1)
    with pytest.raises(ShapeError, match="crop"):
        cache.crop(9)


@pytest.mark.parametrize("variant", ["gpt2", "gpt_neo", "gptj"])
def test_prompt_lookup_gives_the_greedy_tokens(variant, tmp_path):
    _, model = _hf_pair(variant, tmp_path)
    ids = torch.randint(1, VOCAB, (1, 6))
    plain = generate(model, ids, max_new_tokens=40)
    fast = generate(model, ids, max_new_tokens=40, prompt_lookup_tokens=5)
    assert torch.equal(fast.sequences, plain.sequences) and fast.stopped_by == plain.stopped_by
    eos = plain.new_tokens[0][25]
    stop_at = plain.new_tokens[0].index(eos)
    with_eos = generate(model, ids, max_new_tokens=40, prompt_lookup_tokens=5, eos_token_id=eos)
    assert with_eos.new_tokens[0] == plain.new_tokens[0][: stop_at + 1] and with_eos.stopped_by == ["eos"]
    text = _decode(plain.new_tokens[0])
    stop = text[20:23]
    expected = generate(model, ids, max_new_tokens=40, stop_strings=[stop], decode=_decode)
    got = generate(model, ids, max_new_tokens=40, stop_strings=[stop], decode=_decode, prompt_lookup_tokens=5)
    assert got.new_tokens == expected.new_tokens and got.stopped_by == ["stop_string"]


def test_prompt_lookup_refuses_what_it_cannot_do(monkeypatch):
    model = _model()
    ids, mask = _left_pad(_prompts())
    with pytest.raises(ConfigError, match="one prompt at a time"):
        generate(model, ids, mask, prompt_lookup_tokens=4)
    with pytest.raises(ConfigError, match="greedy decoding only"):
        generate(model, ids[:1], prompt_lookup_tokens=4, do_sample=True)
    attention.list()
    monkeypatch.setitem(attention_registry._REGISTRY, _RecomputeAttention.name, _RecomputeAttention)
    config = GPTConfig(vocab_size=VOCAB, n_positions=48, d_model=32, n_layers=2, n_heads=4, attention=_RecomputeAttention.name)
    with pytest.raises(ConfigError, match="caches that can forget"):
        generate(GPTLMHeadModel(config).eval(), ids[:1], prompt_lookup_tokens=4)


def test_a_recurrent_mechanism_generates_through_its_own_state():
    """linear attention keeps a running state, not keys and values: the loop works the same."""
    config = GPTConfig(vocab_size=VOCAB, n_positions=48, d_model=32, n_layers=2, n_heads=4, attention="linear")
    model = _randomise(GPTLMHeadModel(config))
    assert type(model.new_caches()[0].self_attention).__name__ == "RecurrentState"
    prompts = _prompts()
    ids, mask = _left_pad(prompts)
    batch = generate(model, ids, mask, max_new_tokens=6)
    for row, prompt in enumerate(prompts):
        alone = generate(model, prompt[None], max_new_tokens=6)
        assert alone.new_tokens[0] == batch.new_tokens[row]
        with torch.no_grad():  # each token is the argmax of a full forward over what came before
            full = model(alone.sequences).logits[0, len(prompt) - 1 : -1]
        assert full.argmax(-1).tolist() == alone.new_tokens[0]
    with pytest.raises(ConfigError, match="caches that can forget"):
        generate(model, prompts[0][None], prompt_lookup_tokens=3)


def test_image_gpt_reuses_the_loop():
    """iGPT's completion (its own sampler) and the shared loop pick the same pixels."""
    from polyformer.models.igpt import ImageGPTConfig, ImageGPTForCausalImageModeling

    model = _randomise(ImageGPTForCausalImageModeling(
        ImageGPTConfig(vocab_size=9, n_positions=16, d_model=32, n_layers=2, n_heads=4)))
    pixels = torch.randint(0, 8, (2, 6))
    greedy = generate(model, model.with_start_token(pixels), max_new_tokens=10)
    assert torch.equal(greedy.sequences[:, 1:], model.complete(pixels, total_length=16, temperature=0))
    sampled = generate(model, model.with_start_token(pixels), max_new_tokens=10, do_sample=True, temperature=0.8,
                       generator=torch.Generator().manual_seed(5))
    own = model.complete(pixels, total_length=16, temperature=0.8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(sampled.sequences[:, 1:], own)
