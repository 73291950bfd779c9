"""``pipeline("text-generation")`` against Hugging Face's pipeline, and the streaming CLI."""

import random

import pytest
import torch

import polyformer
from polyformer.cli import main
from polyformer.errors import ConfigError
from polyformer.generation import TextStreamer
from polyformer.processors.text import TextTokenizer, train_bpe

transformers = pytest.importorskip("transformers")

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "away", "café", "\n", "."]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny random GPT-2 and a BPE trained for it, saved the way Hugging Face ships GPT-2."""
    path = tmp_path_factory.mktemp("tiny-gpt2")
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(10)) for _ in range(300)]
    tokenizer = train_bpe(texts=corpus, vocab_size=300, progress=False)
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                     eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    model.save_pretrained(path)
    return path


def test_output_format_and_text_equal_hf_pipeline(folder):
    ours = polyformer.pipeline("text-generation", model=str(folder))
    theirs = transformers.pipeline("text-generation", model=str(folder))
    for prompt in ("the cat", "a dog ran away on the"):
        expected = theirs(prompt, max_new_tokens=8, do_sample=False)
        assert ours(prompt, max_new_tokens=8) == expected
        assert ours(prompt, max_new_tokens=8, return_full_text=False) == theirs(
            prompt, max_new_tokens=8, do_sample=False, return_full_text=False)
    batch = ours(["the cat", "a dog ran away on the"], max_new_tokens=8)
    assert batch == [ours("the cat", max_new_tokens=8), ours("a dog ran away on the", max_new_tokens=8)]


def test_sampled_sequences_and_stop_strings(folder):
    generator = polyformer.pipeline("text-generation", model=folder, max_new_tokens=12)
    samples = generator("the", do_sample=True, seed=0, num_return_sequences=3)
    assert len(samples) == 3 and all(s["generated_text"].startswith("the") for s in samples)
    assert samples == generator("the", do_sample=True, seed=0, num_return_sequences=3)
    full = generator("the cat", return_full_text=False)[0]["generated_text"]
    stop = full[3:5]
    cut = generator("the cat", return_full_text=False, stop_strings=[stop])[0]["generated_text"]
    assert cut == full[: full.find(stop)]


def test_loaded_model_needs_a_tokenizer(folder):
    model = polyformer.from_pretrained(folder)
    with pytest.raises(ConfigError, match="needs tokenizer="):
        polyformer.pipeline("text-generation", model=model)
    tokenizer = TextTokenizer.from_pretrained(folder)
    assert polyformer.pipeline("text-generation", model=model, tokenizer=tokenizer)("the", max_new_tokens=3)


def test_cli_streams_the_same_text_as_the_pipeline(folder, capsys):
    expected = polyformer.pipeline("text-generation", model=folder)("the cat", max_new_tokens=10)[0]["generated_text"]
    assert main(["generate", "--model", str(folder), "--prompt", "the cat", "--max-new-tokens", "10"]) == 0
    assert capsys.readouterr().out == expected + "\n"
    assert main(["generate", "--model", str(folder), "--prompt", "the cat", "--max-new-tokens", "10",
                 "--prompt-lookup", "4"]) == 0
    assert capsys.readouterr().out == expected + "\n"
    sampled = ["generate", "--model", str(folder), "--prompt", "the", "--top-p", "0.9", "--seed", "2",
               "--max-new-tokens", "10"]
    main(sampled)
    first = capsys.readouterr().out
    main(sampled)
    assert capsys.readouterr().out == first
    assert main(["generate", "--model", str(folder), "--prompt", "the " * 70, "--max-new-tokens", "5"]) == 2
    captured = capsys.readouterr()
    assert "pass truncate=True" in captured.err and captured.out == ""


def test_text_streamer_holds_back_partial_characters_and_stop_strings():
    import io

    pieces = {1: "ab", 2: "\xc3", 3: "\xa9", 4: "<", 5: "/s", 6: ">", 7: "z"}

    def decode(ids):  # bytes joined, then decoded like a byte-level BPE does
        raw = "".join(pieces[i] for i in ids).encode("latin-1")
        return raw.decode("utf-8", errors="replace")

    out = io.StringIO()
    streamer = TextStreamer(decode, stop_strings=["</s>"], out=out)
    written = []
    for token in (1, 2, 3, 4, 5):
        streamer.put([token])
        written.append(out.getvalue())
    assert written == ["ab", "ab", "abé", "abé", "abé"]  # "\xc3" alone and "<", "</s" are held back
    streamer.put([6])
    streamer.end()
    assert out.getvalue() == "abé\n"
