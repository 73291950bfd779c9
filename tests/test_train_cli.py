"""`polyformer train lm` in one process, and its refusals of bad input."""

import json

from _train_helpers import make_data
from polyformer.cli import main
from polyformer.train.metrics import read_metrics

TINY = '{"d_model": 16, "n_heads": 2, "n_layers": 1, "n_positions": 16}'


def _train(tmp_path, *extra):
    return main(["train", "lm", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--model",
                 "_tiny_lm:build", "--model-config", TINY, "--total-steps", "6", "--warmup-steps", "1",
                 "--batch-size", "2", "--seq-len", "16", "--eval-tokens", "64", "--no-progress", *extra])


def test_train_command_runs_and_resumes(tmp_path, capsys):
    make_data(tmp_path / "data")
    assert _train(tmp_path, "--lr", "0.002") == 0
    assert "final validation loss" in capsys.readouterr().out
    launch = json.loads((tmp_path / "run" / "launch.json").read_text())
    assert launch["train"]["lr"] == 0.002 and launch["model"]["family"] == "_tiny_lm:build"
    assert len([r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]) == 6
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert _train(tmp_path, "--lr", "0.002") == 0  # a finished run: resumed at its end, nothing retrained
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == metrics
    assert _train(tmp_path, "--lr", "0.001") == 2
    assert "training config differs in lr" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "launch.json").read_text())["train"]["lr"] == 0.002  # kept as it was
    assert _train(tmp_path, "--lr", "0.002", "--nproc", "2") == 2  # refused before any worker starts
    assert "written by 1 processes, this run has 2" in capsys.readouterr().err


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "lm", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "run")]) == 2
    assert "polyformer data prepare" in capsys.readouterr().err
    make_data(tmp_path / "data")
    cases = [
        (["--model-config", "{not json"], "--model-config: expected JSON"),
        (["--nproc", "0"], "--nproc must be at least 1"),
        (["--warmup-steps", "10"], "warmup_steps (10) must be smaller than total_steps (6)"),
    ]
    for extra, message in cases:
        assert _train(tmp_path, *extra) == 2
        assert message in capsys.readouterr().err
    assert main(["train", "lm", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "r2"), "--model", "nope"]) == 2
    assert "unknown model family 'nope'" in capsys.readouterr().err


def test_a_gpt_run_ends_with_a_folder_the_text_generation_pipeline_takes(tmp_path, capsys):
    from polyformer import pipeline
    from polyformer.data.corpus import Document
    from polyformer.data.prepare import PrepareOptions, prepare_corpus

    text = [Document("a", "the quick brown fox jumps over the lazy dog. " * 40),
            Document("b", "a second document about dogs and foxes. " * 40)]
    prepare_corpus(text, tmp_path / "data", PrepareOptions(vocab_size=300), corpus="toy")
    config = '{"d_model": 16, "n_heads": 2, "n_layers": 1}'
    assert main(["train", "lm", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--model-config",
                 config, "--total-steps", "4", "--warmup-steps", "1", "--batch-size", "2", "--seq-len", "16",
                 "--eval-tokens", "64", "--no-progress"]) == 0
    folder = tmp_path / "run" / "model"
    assert f"model folder (for pipeline): {folder}" in capsys.readouterr().out
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in folder.iterdir()}
    assert json.loads((folder / "config.json").read_text())["n_positions"] == 16  # the training length
    out = pipeline("text-generation", model=folder)("the quick", max_new_tokens=3, do_sample=False)
    assert out[0]["generated_text"].startswith("the quick")


def test_bert_trains_masked_lm_from_the_command_line(tmp_path, capsys):
    make_data(tmp_path / "data")
    bert = ["train", "lm", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "bert"), "--model", "bert",
            "--model-config", '{"d_model": 16, "n_layers": 1, "n_heads": 2, "d_ff": 32}', "--total-steps", "3",
            "--warmup-steps", "1", "--batch-size", "2", "--seq-len", "16", "--eval-tokens", "64", "--no-progress"]
    assert main(bert) == 2
    assert "needs mask_token_id" in capsys.readouterr().err
    assert main([*bert, "--task-options", '{"mask_token_id": 1}']) == 0
    launch = json.loads((tmp_path / "bert" / "launch.json").read_text())
    assert launch["model"]["task_options"] == {"mask_token_id": 1}
    assert launch["model"]["config"]["max_position_embeddings"] == 16  # the family's length default
