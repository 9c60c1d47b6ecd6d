"""Finding, verifying and tokenising the corpus; every user error is one clear line."""

from __future__ import annotations

import io
import urllib.error

import pytest
import torch

from lab.core import corpus as corpus_module
from lab.core.corpus import TINY_SHAKESPEARE_SHA256, locate_corpus, read_corpus_text
from lab.core.data import DataError, get_batch, load_corpus

from conftest import write_corpus

#: The real corpus, found before any test hides $DROPRES_DATA.
REAL_CORPUS = locate_corpus()


@pytest.fixture
def no_env_no_cache(tmp_path, monkeypatch):
    """No $DROPRES_DATA and an empty user cache."""
    monkeypatch.delenv("DROPRES_DATA", raising=False)
    monkeypatch.setattr(corpus_module, "cache_dir", lambda: tmp_path / "cache")
    return tmp_path / "cache"


def test_tiny_shakespeare_has_the_published_shape():
    corpus = load_corpus(locate_corpus())  # $DROPRES_DATA, set by .ci/run
    assert corpus.sha256 == TINY_SHAKESPEARE_SHA256
    assert corpus.vocab_size == 65
    assert list(corpus.chars) == sorted(corpus.chars)
    assert len(corpus.train) + len(corpus.val) == 1_115_394
    assert len(corpus.train) == 1_003_854
    assert corpus.decode(corpus.train[:14].tolist()) == "First Citizen:"


def test_any_utf8_text_file_is_a_corpus(tmp_path):
    path = tmp_path / "poem.txt"
    path.write_text("ÄÖÜ über alles, naïve café. " * 200, encoding="utf-8")
    corpus = load_corpus(locate_corpus(str(path)))
    assert "é" in corpus.chars and corpus.vocab_size == len(set(path.read_text(encoding="utf-8")))
    assert corpus.decode(corpus.encode("café")) == "café"


def test_tokens_are_each_characters_index_in_the_sorted_vocabulary(tmp_path):
    """The tensor tokeniser gives what the plain definition gives, beyond one byte and the BMP."""
    text = "naïve café, 𝄞 clef; ÄÖÜ ~ tab\t and \U0010FFFF end\n" * 30
    path = tmp_path / "mixed.txt"
    path.write_text(text, encoding="utf-8")
    corpus = load_corpus(locate_corpus(str(path)))
    chars = sorted(set(text))
    assert list(corpus.chars) == chars
    ids = torch.cat([corpus.train, corpus.val])
    assert ids.dtype == torch.int64 and ids.tolist() == [chars.index(c) for c in text]


def test_batches_are_next_character_windows(corpus_file):
    corpus = load_corpus(corpus_file)
    x, y = get_batch(corpus, "train", 4, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 16)
    assert torch.equal(x[:, 1:], y[:, :-1])
    x2, _ = get_batch(corpus, "train", 4, 16, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)  # the data seed alone decides the batches


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"corpus .*nope\.txt: not found"):
        locate_corpus(str(tmp_path / "nope.txt"))


def test_env_var_pointing_nowhere(no_env_no_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("DROPRES_DATA", str(tmp_path / "gone.txt"))
    with pytest.raises(DataError, match=r"\$DROPRES_DATA=.*file not found"):
        locate_corpus()


def test_offline_and_not_cached(no_env_no_cache, monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(corpus_module.urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as info:
        locate_corpus()
    msg = str(info.value)
    assert "download failed" in msg and "--data PATH" in msg and "$DROPRES_DATA" in msg
    assert "\n" not in msg


def test_checksum_mismatch_on_the_downloaded_copy_is_not_kept(no_env_no_cache, monkeypatch):
    monkeypatch.setattr(corpus_module.urllib.request, "urlopen", lambda *a, **k: io.BytesIO(b"not shakespeare"))
    with pytest.raises(DataError, match="SHA-256"):
        locate_corpus()
    assert not (no_env_no_cache / "tinyshakespeare.txt").exists()


def test_a_verified_download_is_cached(no_env_no_cache, monkeypatch):
    blob = REAL_CORPUS.read_bytes()
    monkeypatch.setattr(corpus_module.urllib.request, "urlopen", lambda *a, **k: io.BytesIO(blob))
    path = locate_corpus()
    assert path == no_env_no_cache / "tinyshakespeare.txt" and path.read_bytes() == blob
    monkeypatch.setattr(corpus_module.urllib.request, "urlopen", lambda *a, **k: pytest.fail("downloaded twice"))
    assert locate_corpus() == path


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café ".encode("latin-1") * 100)
    with pytest.raises(DataError, match="not UTF-8"):
        load_corpus(path)


def test_binary_and_empty_files(tmp_path):
    (tmp_path / "bin").write_bytes(b"\x00\x01\x02" * 100)
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(DataError, match="binary"):
        load_corpus(tmp_path / "bin")
    with pytest.raises(DataError, match="empty"):
        load_corpus(tmp_path / "empty")


def test_shorter_than_one_block(tmp_path):
    corpus = load_corpus(write_corpus(tmp_path / "short.txt", chars=300))
    with pytest.raises(DataError, match="too short for block_size 64"):
        corpus.check_block_size(64)
    corpus.check_block_size(16)


def test_the_text_alone_answers_what_a_launch_checks(tmp_path):
    """A launch is checked on the text (no tokens, no torch): same hash, same block-size verdict."""
    path = write_corpus(tmp_path / "short.txt", chars=300)
    text, tokens = read_corpus_text(path), load_corpus(path)
    assert text.sha256 == tokens.sha256 and len(text.text) == len(tokens.train) + len(tokens.val)
    with pytest.raises(DataError, match="too short for block_size 64"):
        text.check_block_size(64)
    text.check_block_size(16)
