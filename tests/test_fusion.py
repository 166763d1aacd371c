"""Field fusion (gcl.fusion) against a naive per-item loop."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gcl.fusion import DEFAULT_DOC_FIELD_WEIGHTS, field_weights, fuse

HYPO = dict(deadline=None, derandomize=True, database=None, max_examples=60)


def naive_fuse(embs: list[torch.Tensor], weights: list[float], present: list[list[bool]] | None) -> torch.Tensor:
    """Item by item: renormalise the weights of the fields present, sum unit vectors, normalise."""
    m, n, d = len(embs), embs[0].shape[0], embs[0].shape[1]
    out = torch.zeros(n, d, dtype=embs[0].dtype)
    for i in range(n):
        here = [j for j in range(m) if present is None or present[j][i]]
        total = sum(weights[j] for j in here)
        if not here or total == 0:
            continue  # no field present: the zero vector
        acc = torch.zeros(d, dtype=embs[0].dtype)
        for j in here:
            v = embs[j][i]
            acc += (weights[j] / total) * v / v.norm()
        norm = acc.norm()
        out[i] = acc / norm if norm > 0 else acc
    return out


@settings(**HYPO)
@given(
    m=st.integers(1, 3),
    n=st.integers(1, 6),
    d=st.integers(1, 5),
    seed=st.integers(0, 10_000),
    data=st.data(),
)
def test_fuse_matches_naive_loop(m, n, d, seed, data):
    g = torch.Generator().manual_seed(seed)
    embs = [torch.randn(n, d, generator=g, dtype=torch.float64) + 0.1 for _ in range(m)]
    # zero weights allowed, not all zero: fuse([e], [0.0]) takes the one-field shortcut and returns
    # normalise(e), while more fields with all-zero weights give the zero vector
    weights = data.draw(st.lists(st.floats(0.0, 5.0), min_size=m, max_size=m).filter(lambda w: sum(w) > 0))
    present = data.draw(st.none() | st.lists(st.lists(st.booleans(), min_size=n, max_size=n), min_size=m, max_size=m))
    got = fuse(embs, weights, None if present is None else [torch.tensor(p) for p in present])
    want = naive_fuse(embs, weights, present)
    assert got.shape == (n, d) and got.dtype == torch.float64
    assert torch.allclose(got, want, atol=1e-10)


def test_missing_field_gets_weight_zero_and_the_rest_renormalise():
    img = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    title = torch.tensor([[0.0, 1.0], [0.0, 5.0], [0.0, 7.0]])
    present = [torch.tensor([True, False, True]), torch.tensor([True, True, False])]
    out = fuse([img, title], [0.9, 0.1], present)
    both = torch.tensor([0.9, 0.1]) / math.hypot(0.9, 0.1)
    assert torch.allclose(out[0], both)  # both present: 0.9 / 0.1
    assert torch.allclose(out[1], torch.tensor([0.0, 1.0]))  # image missing: the title alone (weight 1)
    assert torch.allclose(out[2], torch.tensor([0.0, 1.0]))  # title missing: the image alone


def test_default_document_weights_are_image_09_title_01():
    assert DEFAULT_DOC_FIELD_WEIGHTS == {"image": 0.9, "title": 0.1}
    assert field_weights(["image", "title"]) == [0.9, 0.1]
    assert field_weights(["title", "image"]) == [0.1, 0.9]
    assert field_weights(["title"]) == [1.0]
    assert field_weights(["title", "description"]) == [1.0, 1.0]  # no defaults: uniform
    assert field_weights(["title", "image"], {"title": 0.5, "image": 0.5}) == [0.5, 0.5]
    with pytest.raises(ValueError, match="no fusion weight"):
        field_weights(["title", "image"], {"title": 1.0})


def test_item_with_no_field_present_is_the_zero_vector():
    embs = [torch.randn(3, 4), torch.randn(3, 4)]
    present = [torch.tensor([True, False, False]), torch.tensor([False, False, True])]
    out = fuse(embs, [0.9, 0.1], present)
    assert torch.equal(out[1], torch.zeros(4))
    assert torch.isfinite(out).all()
    assert torch.allclose(out[[0, 2]].norm(dim=1), torch.ones(2))


def test_single_field_without_mask_is_normalisation():
    e = torch.tensor([[3.0, 4.0]])
    assert torch.allclose(fuse([e], [1.0]), torch.tensor([[0.6, 0.8]]))


def test_fuse_rejects_bad_arguments():
    e = torch.randn(2, 3)
    with pytest.raises(ValueError, match="at least one"):
        fuse([], [])
    with pytest.raises(ValueError, match="2 field embeddings but 1 weights"):
        fuse([e, e], [1.0])
    with pytest.raises(ValueError, match="non-negative"):
        fuse([e, e], [1.0, -0.1])


def test_bi_encoder_document_fusion_treats_empty_text_as_missing():
    """BiEncoder.encode_documents fuses fields with presence = non-empty text."""
    from conftest_trainer import tiny_model

    from gcl.encoders.model import BiEncoder, BiEncoderConfig

    model = BiEncoder(BiEncoderConfig(text_model=str(tiny_model(0.0)), doc_fields=["title", "brand"],
                                      doc_field_weights={"title": 0.7, "brand": 0.3}))
    docs = pd.DataFrame({"title": ["red chair", "", ""], "brand": ["acme", "acme", ""]})
    got = model.encode_documents(docs)
    t = model.encode_texts(["red chair"])[0]
    b = model.encode_texts(["acme"])[0]
    want0 = 0.7 * t + 0.3 * b
    assert np.allclose(got[0], want0 / np.linalg.norm(want0), atol=1e-5)
    assert np.allclose(got[1], b, atol=1e-5)
    assert np.allclose(got[2], 0.0)
