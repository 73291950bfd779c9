"""The GPT speed benchmark runs (tiny sizes), compares like with like, and prints its JSON."""

import doctest
import json
import runpy
import sys
from pathlib import Path

import pytest

import polyformer.generation
import polyformer.models.gpt

pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpt_speed.py"


def test_quick_benchmark_reports_both_sides_on_the_same_weights(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--quick", "--json", "--steps", "1", "--repeats", "1",
                                      "--threads", "1", "--batch", "2"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert done.value.code == 0
    train, gen = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert train["benchmark"] == "gpt2_train" and train["first_loss_difference"] < 1e-4
    assert train["polyformer"]["tokens_per_s_best"] > 0 and train["hf"]["tokens_per_s_best"] > 0
    assert 0 < train["polyformer"]["mfu_best"] < 1
    assert gen["benchmark"] == "gpt2_generate" and gen["same_tokens"] is True


@pytest.mark.parametrize("module", [polyformer.models.gpt, polyformer.generation], ids=lambda m: m.__name__)
def test_module_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
