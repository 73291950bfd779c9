"""The vision modules' docstring examples run (docs/vision.md's blocks run in test_docs_examples.py)."""

import doctest

import pytest

import polyformer.models.igpt
import polyformer.models.vit


@pytest.mark.parametrize("module", [polyformer.models.vit, polyformer.models.igpt], ids=lambda m: m.__name__)
def test_module_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
