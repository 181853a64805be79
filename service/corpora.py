"""Corpora the server owns: the only ones a study or calibration submitted over the API may name.

A client of the REST API must never make the server read a file of the client's choosing (`/etc/passwd`,
`/proc/self/environ`, `../..`). So over REST a `corpus` field names one of:

- `upload:<sha256>`: a corpus uploaded through POST /api/v1/corpora, stored content-addressed as
  `<data dir>/uploaded-corpora/<sha256>.txt` (at most ALPHASEARCH_MAX_CORPUS_BYTES), listed by GET and
  removed by DELETE /api/v1/corpora/<sha256>;
- a relative path under the operator's ALPHASEARCH_CORPUS_DIR (a text file or a folder of .txt files),
  which may not leave that folder (no absolute path, no `..`, no symbolic link pointing out of it);
- null or "shakespeare": the bundled default corpus.

Anything else is a 422 naming the field `corpus` that echoes no server path. The stored spec keeps the
name; the scheduler turns it into a path only when it runs the study (`Corpora.path_of`), so no answer of
the API shows a server path. The CLI, which runs as its user on the user's machine, keeps local paths.
On a multi-node Ray cluster the data dir (and the corpus dir) must be shared, as for the result cache.

    >>> corpora = Corpora.from_settings(Settings(data_dir="/tmp/as"))  # doctest: +SKIP
    >>> corpora.check("/etc/passwd")  # doctest: +SKIP
    ConfigError: corpus: an absolute path; over the API ...
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from alphasearch.data import DEFAULT_CORPUS
from alphasearch.errors import ConfigError
from service.settings import Settings

UPLOAD_PREFIX = "upload:"
ID_PATTERN = re.compile(r"[0-9a-f]{64}")
HOW = (
    "over the API `corpus` names a corpus the server owns: upload one with POST /api/v1/corpora and give the "
    "`corpus` it answers (upload:<sha256>), name one under the server's corpus folder (GET /api/v1/corpora "
    "lists both), or leave it out for the default"
)


class CorpusTooLarge(Exception):
    """An upload went over the size limit (the route answers 413)."""


@dataclass
class CorpusInfo:
    """One corpus a study may name; `corpus` is the value to give in a study's `corpus` field."""

    corpus: str
    kind: str  # "uploaded" | "server"
    name: str  # the uploader's file name, or the path under the corpus folder
    size_bytes: int | None  # None for a folder under the corpus folder (not summed on every listing)
    sha256: str | None = None
    uploaded_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Corpora:
    """The server's corpora: the uploaded ones under the data dir and the operator's corpus folder."""

    def __init__(self, uploads: Path, operator_root: Path | None, max_bytes: int) -> None:
        self.uploads, self.operator_root, self.max_bytes = uploads, operator_root, max_bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> Corpora:
        root = settings.corpus_dir.expanduser().resolve() if settings.corpus_dir else None
        return cls(settings.resolved_data_dir / "uploaded-corpora", root, settings.max_corpus_bytes)

    # -- naming ---------------------------------------------------------------------------------------
    def check(self, corpus: Any) -> None:
        """ConfigError naming `corpus` unless it names a corpus this server owns (see the module doc)."""
        self.path_of(corpus)

    def path_of(self, corpus: Any) -> str | None:
        """The path to train on for a corpus name (None: the default corpus), or ConfigError."""
        if corpus is None or corpus == DEFAULT_CORPUS:
            return None
        if not isinstance(corpus, str) or not corpus.strip() or "\x00" in corpus:
            raise ConfigError("corpus", f"expected a corpus name; {HOW}")
        if corpus.startswith(UPLOAD_PREFIX):
            sha = corpus[len(UPLOAD_PREFIX) :]
            if not ID_PATTERN.fullmatch(sha):
                raise ConfigError("corpus", f"an uploaded corpus is upload:<64 lowercase hex digits>; {HOW}")
            path = self._upload_path(sha)
            if not path.is_file():
                raise ConfigError("corpus", f"no uploaded corpus {corpus}; upload it first (POST /api/v1/corpora)")
            return str(path.resolve())
        return str(self._under_root(corpus))

    def _under_root(self, name: str) -> Path:
        pure = PurePosixPath(name)
        if name.startswith(("/", "~", "\\")) or pure.is_absolute() or re.match(r"^[A-Za-z]:", name):
            raise ConfigError("corpus", f"an absolute path; {HOW}")
        if any(part == ".." for part in pure.parts) or "\\" in name:
            raise ConfigError("corpus", f"a path with `..` or a backslash; {HOW}")
        if self.operator_root is None:
            raise ConfigError("corpus", f"this server has no corpus folder (ALPHASEARCH_CORPUS_DIR is unset); {HOW}")
        path = (self.operator_root / pure).resolve()  # symbolic links followed: the target must stay inside
        if path != self.operator_root and self.operator_root not in path.parents:
            raise ConfigError("corpus", f"{name!r} points outside the server's corpus folder; {HOW}")
        if not path.exists() or path == self.operator_root:
            raise ConfigError("corpus", f"no corpus {name!r} in the server's corpus folder; {HOW}")
        return path

    # -- uploads --------------------------------------------------------------------------------------
    def _upload_path(self, sha: str) -> Path:
        return self.uploads / f"{sha}.txt"

    def begin_upload(self) -> Upload:
        self.uploads.mkdir(parents=True, exist_ok=True)
        return Upload(self)

    def get(self, sha: str) -> CorpusInfo | None:
        if not ID_PATTERN.fullmatch(sha):
            return None
        path = self._upload_path(sha)
        if not path.is_file():
            return None
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
        except (OSError, ValueError):
            meta = {}
        return CorpusInfo(f"{UPLOAD_PREFIX}{sha}", "uploaded", str(meta.get("name") or f"{sha[:12]}.txt"),
                          path.stat().st_size, sha, meta.get("uploaded_at"))  # fmt: skip

    def uploaded(self) -> list[CorpusInfo]:
        if not self.uploads.is_dir():
            return []
        found = (self.get(p.stem) for p in self.uploads.glob("*.txt"))
        return sorted((c for c in found if c is not None), key=lambda c: (c.uploaded_at or "", c.corpus), reverse=True)

    def on_server(self) -> list[CorpusInfo]:
        """The operator's corpus folder, one level deep: its text files and its folders."""
        root = self.operator_root
        if root is None or not root.is_dir():
            return []
        out = []
        for entry in sorted(root.iterdir()):
            try:
                self._under_root(entry.name)
            except ConfigError:
                continue  # e.g. a link pointing outside the folder: not offered
            size = entry.stat().st_size if entry.is_file() else None
            out.append(CorpusInfo(entry.name, "server", entry.name, size))
        return out

    def delete(self, sha: str) -> bool:
        if self.get(sha) is None:
            return False
        self._upload_path(sha).unlink(missing_ok=True)
        self._upload_path(sha).with_suffix(".json").unlink(missing_ok=True)
        return True


class Upload:
    """One upload being received: bytes are hashed and written to a temporary file as they arrive, then
    moved to their content address. Over `max_bytes`, `write` raises CorpusTooLarge."""

    def __init__(self, corpora: Corpora) -> None:
        self.corpora = corpora
        self.size = 0
        self.sha = hashlib.sha256()
        self.tmp = corpora.uploads / f".upload-{secrets.token_hex(8)}.part"
        self.file = self.tmp.open("wb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.corpora.max_bytes:
            raise CorpusTooLarge
        self.sha.update(chunk)
        self.file.write(chunk)

    def finish(self, name: str | None) -> tuple[CorpusInfo, bool]:
        """(the stored corpus, whether it is new). ConfigError for an empty upload."""
        self.file.close()
        if self.size == 0:
            self.abort()
            raise ConfigError("file", "the corpus is empty; upload a text with content")
        sha = self.sha.hexdigest()
        target = self.corpora._upload_path(sha)
        created = not target.is_file()
        if created:
            meta = {"name": _display_name(name, sha), "uploaded_at": datetime.now(UTC).isoformat(timespec="seconds")}
            target.with_suffix(".json").write_text(json.dumps(meta))
            os.replace(self.tmp, target)  # atomic: a reader never sees half a corpus
        else:
            self.abort()
        info = self.corpora.get(sha)
        assert info is not None
        return info, created

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def _display_name(name: str | None, sha: str) -> str:
    """The uploader's file name without any folder part, printable, at most 200 characters."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()[:200]
    return base or f"{sha[:12]}.txt"
