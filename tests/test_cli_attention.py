import pytest

from polyformer.cli import main


def test_show_draws_a_png(tmp_path):
    out = tmp_path / "lf.png"
    assert main(["attention", "show", "longformer", "--window", "8", "--global-tokens", "0,1", "--n", "64",
                 "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_show_per_head_and_causal(tmp_path):
    out = tmp_path / "bb.png"
    assert main(["attention", "show", "bigbird", "--block-size", "4", "--heads", "2", "--causal", "-o", str(out)]) == 0
    assert out.exists()


def test_show_errors_name_the_option(tmp_path, capsys):
    assert main(["attention", "show", "longformer", "--windw", "8", "-o", str(tmp_path / "x.png")]) == 2
    assert "unknown option --windw" in capsys.readouterr().err
    assert main(["attention", "show", "no-such"]) == 2
    assert "known mechanisms" in capsys.readouterr().err
    assert main(["attention", "show", "dense"]) == 2
    assert "pattern-based mechanisms" in capsys.readouterr().err


def test_list_names_every_mechanism(capsys):
    assert main(["attention", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("dense", "sliding_window", "longformer", "bigbird", "dilated", "random", "block_local", "global"):
        assert name in out


def test_extra_arguments_are_rejected_elsewhere():
    with pytest.raises(SystemExit):
        main(["attention", "list", "--window", "3"])
