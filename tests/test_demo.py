from polyformer.cli import main


def test_quick_demo_writes_a_self_contained_report(tmp_path):
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    index = (tmp_path / "index.html").read_text()
    assert "<html" in index and "sparse patterns" in index
    import re

    for image in re.findall(r'src="([^"]+)"', index):
        assert (tmp_path / image).stat().st_size > 0
