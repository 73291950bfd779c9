"""docs/scaling.md stays true: its Python example runs and its GPT-3 cost output is what the command prints."""

import re
from pathlib import Path

from polyformer.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "scaling.md"


def test_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), {})


def test_gpt3_cost_output_matches_the_doc(capsys):
    text = DOC.read_text()
    block = re.search(r"```\n\$ polyformer (scaling cost [^\n]+)\n(.*?)```", text, flags=re.S)
    command, expected = block.group(1).split(), block.group(2)
    assert main(command) == 0
    assert capsys.readouterr().out == expected
