"""The examples in docs/vision.md and the vision modules' docstrings run and their assertions hold."""

import doctest
import pathlib
import re

import pytest

import polyformer.models.igpt
import polyformer.models.vit

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "vision.md"


def test_vision_doc_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)


@pytest.mark.parametrize("module", [polyformer.models.vit, polyformer.models.igpt])
def test_module_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
