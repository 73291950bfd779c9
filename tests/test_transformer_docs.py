"""The examples in docs/core.md and the module docstring run and their assertions hold."""

import doctest
import pathlib
import re

import polyformer.transformer

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "core.md"


def test_core_doc_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:  # later blocks may use names from earlier ones, like a reader would
        exec(compile(block, str(DOC), "exec"), namespace)


def test_transformer_module_docstring_example():
    result = doctest.testmod(polyformer.transformer, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
