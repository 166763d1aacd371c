"""``gcl soup`` / :func:`gcl.encoders.soup.soup`: the weighted average of saved models' weights.

Claims: every averaged tensor equals a naive float64 sum of the ingredients' tensors read back
from their files; a tensor equal in all ingredients is copied bit for bit (so a frozen bottom keeps
its record and its stored outputs); weight (1, 0) gives the first model back exactly; ingredients of
different shape, fields or weight formats, and bad weights, are refused with a message naming the
cause (CLI: one ``error:`` line, exit 2).
"""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from conftest_trainer import make_config, synthetic_splits
from safetensors.torch import load_file, save_file
from tiny_models import make_tiny_sentence_transformer

from gcl.cli.main import main
from gcl.encoders.soup import soup, soup_weights
from gcl.errors import ConfigError

TEXTS = ["cordless drill", "outdoor led flood light 2 pack", "x", "a longer title with several words"]


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    return make_tiny_sentence_transformer(d / "a", seed=0), make_tiny_sentence_transformer(d / "b", seed=1)


def _embed(path):
    from gcl.encoders.model import BiEncoder

    m = BiEncoder.load(path).eval()
    with torch.inference_mode():
        return m.embed_texts(TEXTS).cpu().numpy()


def test_averaged_tensors_equal_a_naive_weighted_sum(two, tmp_path):
    a, b = two
    out = tmp_path / "soup"
    s = soup([a, b], out, [1.0, 3.0])  # normalised to 0.25, 0.75
    assert s["weights"] == [0.25, 0.75]
    ta, tb, ts = (load_file(str(p / "model.safetensors")) for p in (a, b, out))
    assert set(ts) == set(ta)
    n_avg = 0
    for k in ta:
        assert ts[k].dtype == ta[k].dtype and ts[k].shape == ta[k].shape
        if torch.equal(ta[k], tb[k]):
            assert torch.equal(ts[k], ta[k])
            continue
        n_avg += 1
        naive = np.zeros(ta[k].shape, dtype=np.float64)
        naive += 0.25 * ta[k].double().numpy()
        naive += 0.75 * tb[k].double().numpy()
        np.testing.assert_array_equal(ts[k].numpy(), naive.astype(np.float32))
    assert n_avg == s["averaged_tensors"] > 0
    assert json.loads((out / "gcl_soup.json").read_text())["weights"] == [0.25, 0.75]
    # the rest of the directory is the first model's: it loads and encodes like any model
    assert (out / "modules.json").read_text() == (a / "modules.json").read_text()
    e = _embed(out)
    assert e.shape == (len(TEXTS), 32) and np.isfinite(e).all()
    assert not np.allclose(e, _embed(a), atol=1e-4) and not np.allclose(e, _embed(b), atol=1e-4)


def test_weight_one_gives_the_model_back_bit_for_bit(two, tmp_path):
    a, b = two
    out = tmp_path / "soup"
    soup([a, b], out, [1.0, 0.0])
    ta, ts = load_file(str(a / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(ta[k], ts[k]) for k in ta)
    np.testing.assert_array_equal(_embed(out), _embed(a))


def test_uniform_default_and_weight_checks():
    assert soup_weights(4, None) == [0.25] * 4
    assert soup_weights(2, [2, 6]) == [0.25, 0.75]
    for n, w, msg in [(1, None, "at least two"), (2, [1.0], "one weight per model"), (2, [1, -1], ">= 0"),
                      (2, [0, 0], "not all 0"), (2, [1, float("nan")], "finite")]:
        with pytest.raises(ConfigError, match=msg):
            soup_weights(n, w)


def test_frozen_bottom_stays_exact_and_keeps_its_stored_outputs(tmp_path, monkeypatch):
    """Two runs with the same frozen lower layer, different seeds: the soup copies that layer, so
    its gcl_frozen.json still matches and loading uses the stored outputs (no warning)."""
    from gcl.encoders.base import load_model
    from gcl.training.frozen_reuse import FROZEN_FILE
    from gcl.training.trainer import Trainer

    monkeypatch.setenv("GCL_CACHE_DIR", str(tmp_path / "cache"))
    finals = []
    for seed in (0, 1):
        cfg = make_config(tmp_path / f"r{seed}", dropout=0.1, seed=seed,
                          **{"model__freeze_layers": 1, "optim__steps": 2})
        Trainer(cfg, splits=synthetic_splits()).fit()
        finals.append(tmp_path / f"r{seed}" / "final")
    out = tmp_path / "soup"
    s = soup(finals, out)
    assert s["copied_tensors"] > 0 and s["averaged_tensors"] > 0
    ta, ts = load_file(str(finals[0] / "model.safetensors")), load_file(str(out / "model.safetensors"))
    bottom = [k for k in ta if ".layer.0." in k or "embeddings" in k]  # the frozen bottom: embeddings + layer 0
    assert len(bottom) > 10 and all(torch.equal(ta[k], ts[k]) for k in bottom)
    assert any(not torch.equal(ta[k], ts[k]) for k in ta if ".layer.1." in k)  # the trained top was averaged
    assert (out / FROZEN_FILE).read_text() == (finals[0] / FROZEN_FILE).read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load_model(out)
    assert model.cached_bottom is not None


def test_different_architectures_and_formats_are_refused(two, tmp_path):
    a, b = two
    # a tensor of another shape
    c = tmp_path / "c"
    shutil.copytree(b, c)
    t = load_file(str(c / "model.safetensors"))
    key = next(k for k in t if t[k].ndim == 2)
    t[key] = torch.zeros(t[key].shape[0] + 1, t[key].shape[1])
    save_file(t, str(c / "model.safetensors"))
    with pytest.raises(ConfigError, match=f"tensor {key.replace('.', '[.]')} is"):
        soup([a, c], tmp_path / "o1")
    # a missing tensor
    t = load_file(str(b / "model.safetensors"))
    t.pop(key)
    save_file(t, str(c / "model.safetensors"))
    with pytest.raises(ConfigError, match="tensor names differ"):
        soup([a, c], tmp_path / "o2")
    # another dtype
    t = load_file(str(b / "model.safetensors"))
    t[key] = t[key].double()
    save_file(t, str(c / "model.safetensors"))
    with pytest.raises(ConfigError, match="torch.float64"):
        soup([a, c], tmp_path / "o2b")
    # an integer tensor that differs (a step counter of BatchNorm is the exception: the largest is kept)
    ints = {"a": {"w": torch.ones(2), "ids": torch.tensor([1, 2])}, "b": {"w": torch.zeros(2), "ids": torch.tensor([1, 3])}}
    for name, t in ints.items():
        (tmp_path / f"i{name}").mkdir()
        save_file(t, str(tmp_path / f"i{name}" / "model.safetensors"))
    with pytest.raises(ConfigError, match="integer tensor ids differs"):
        soup([tmp_path / "ia", tmp_path / "ib"], tmp_path / "o2c")
    for name, n in (("a", 5), ("b", 9)):
        save_file({"w": ints[name]["w"], "bn.num_batches_tracked": torch.tensor(n)},
                  str(tmp_path / f"i{name}" / "model.safetensors"))
    soup([tmp_path / "ia", tmp_path / "ib"], tmp_path / "o2d")
    got = load_file(str(tmp_path / "o2d" / "model.safetensors"))
    assert int(got["bn.num_batches_tracked"]) == 9 and torch.equal(got["w"], torch.full((2,), 0.5))
    # a corrupt weights file
    (c / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ConfigError, match="cannot read the weights"):
        soup([a, c], tmp_path / "o2e")
    # other fields, another pooling, malformed JSON
    shutil.rmtree(c)
    shutil.copytree(b, c)
    (c / "gcl_model.json").write_text(json.dumps({"doc_fields": ["title", "description"]}))
    with pytest.raises(ConfigError, match="fields or fusion weights differ"):
        soup([a, c], tmp_path / "o3")
    (c / "gcl_model.json").unlink()
    pool = json.loads((c / "1_Pooling" / "config.json").read_text())
    (c / "1_Pooling" / "config.json").write_text(json.dumps({**pool, "pooling_mode_mean_tokens": False,
                                                              "pooling_mode_cls_token": True}))
    with pytest.raises(ConfigError, match="1_Pooling/config.json: differs"):
        soup([a, c], tmp_path / "o3b")
    (c / "1_Pooling" / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        soup([a, c], tmp_path / "o3c")
    (c / "1_Pooling" / "config.json").write_text(json.dumps(pool))
    # weights soup cannot average
    (c / "extra.bin").write_bytes(b"0")
    with pytest.raises(ConfigError, match="extra.bin"):
        soup([a, c], tmp_path / "o4")
    # an output that holds something
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ConfigError, match="not an empty directory"):
        soup([a, b], tmp_path / "full")


def test_a_failed_write_leaves_neither_output_nor_temporary(two, tmp_path, monkeypatch):
    import safetensors.torch

    a, b = two

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        soup([a, b], tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_calibration_is_not_carried_over(two, tmp_path):
    a, b = two
    c = tmp_path / "c"
    shutil.copytree(a, c)
    (c / "gcl_calibration.json").write_text(json.dumps({"fingerprint": "x"}))
    soup([c, b], tmp_path / "s")
    assert not (tmp_path / "s" / "gcl_calibration.json").exists()


def test_cli(two, tmp_path, capsys):
    a, b = two
    assert main(["soup", str(a), str(b), "--weights", "1", "1", "--out", str(tmp_path / "s")]) == 0
    assert "averaged" in capsys.readouterr().err
    assert (tmp_path / "s" / "model.safetensors").is_file()
    assert main(["soup", str(a), "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "at least two" in err and "Traceback" not in err
    assert main(["soup", str(a), str(tmp_path / "nope"), "--out", str(tmp_path / "u")]) == 2
    assert "not a model directory" in capsys.readouterr().err


def test_a_tokenizer_differing_only_in_its_last_calls_padding_still_soups(two, tmp_path):
    """WiSE-FT mixes a trained model with its untrained start; their tokenizer.json files differ in
    the padding / truncation state of the last call only, which does not block a soup. Another
    vocabulary does."""
    a, b = two
    c = tmp_path / "c"
    shutil.copytree(b, c)
    tok = json.loads((c / "tokenizer.json").read_text())
    pad = {"strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": None, "pad_id": 0,
           "pad_type_id": 0, "pad_token": "[PAD]"}
    other = {**tok, "padding": None if tok.get("padding") else pad,
             "truncation": None if tok.get("truncation") else {"max_length": 8, "strategy": "LongestFirst",
                                                                  "direction": "Right", "stride": 0}}
    (c / "tokenizer.json").write_text(json.dumps(other))
    soup([a, c], tmp_path / "o")
    assert json.loads((tmp_path / "o" / "tokenizer.json").read_text()) == json.loads((a / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    first = next(iter(vocab))
    (c / "tokenizer.json").write_text(json.dumps({**other, "model": {**tok["model"],
                                                                     "vocab": {**vocab, first + "x": len(vocab)}}}))
    with pytest.raises(ConfigError, match="tokenizer.json: differs"):
        soup([a, c], tmp_path / "o2")
