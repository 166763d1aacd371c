"""The error rule (docs/errors.md): only the errors a user's input causes become a GCLError (one
``error:`` line, exit 2); the machine's problems, such as running out of memory, keep their type
and traceback."""

from __future__ import annotations

import pytest
import torch

from gcl.errors import ConfigError, DataError


def _raise(exc):
    def fail(*args, **kwargs):
        raise exc

    return fail


def test_a_model_that_does_not_load_is_a_config_error(monkeypatch):
    import sentence_transformers

    from gcl.encoders.text import load_sentence_transformer

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", _raise(OSError("no such model")))
    with pytest.raises(ConfigError, match="cannot load text model 'nope'.*no such model"):
        load_sentence_transformer("nope")


@pytest.mark.parametrize("exc", [torch.OutOfMemoryError("CUDA out of memory"), MemoryError()])
def test_running_out_of_memory_while_loading_a_model_is_not_a_config_error(monkeypatch, exc):
    import sentence_transformers

    from gcl.encoders.text import load_sentence_transformer

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", _raise(exc))
    with pytest.raises(type(exc)) as info:
        load_sentence_transformer("nope")
    assert not isinstance(info.value, ConfigError)


def test_the_cli_shows_out_of_memory_as_itself_not_as_a_one_line_error(monkeypatch, capsys, tmp_path):
    import sentence_transformers

    from gcl.cli.main import main

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", _raise(torch.OutOfMemoryError("out of memory")))
    with pytest.raises(torch.OutOfMemoryError):
        main(["calibrate", "--model", "some-model-name", "--data", "synthetic", "--out", str(tmp_path / "c.json")])
    assert "error:" not in capsys.readouterr().err


def test_a_corrupt_checkpoint_is_a_config_error_but_out_of_memory_is_not(tmp_path, monkeypatch):
    from gcl.training.checkpoint import load_checkpoint

    (tmp_path / "checkpoint.pt").write_bytes(b"\x00not a checkpoint")
    with pytest.raises(ConfigError, match="corrupt or unreadable"):
        load_checkpoint(tmp_path)
    monkeypatch.setattr(torch, "load", _raise(torch.OutOfMemoryError("out of memory")))
    with pytest.raises(torch.OutOfMemoryError):
        load_checkpoint(tmp_path)


def test_an_image_decoder_out_of_memory_is_not_a_corrupt_image(monkeypatch):
    from PIL import Image

    from gcl.data import images

    with pytest.raises(DataError, match="cannot decode image"):
        images.load_image(b"not an image", root=None)
    monkeypatch.setattr(Image, "open", _raise(MemoryError()))
    with pytest.raises(MemoryError):
        images.load_image(b"not an image", root=None)
