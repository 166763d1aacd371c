"""The trainer takes its dev evaluation as a callable: keep-best and early stopping follow what
it returns, and it receives the model being trained (either model kind)."""

from __future__ import annotations

import pytest
from conftest_trainer import make_config, synthetic_splits

from gcl.encoders.base import EmbeddingModel
from gcl.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_an_injected_dev_evaluation_drives_keep_best_and_early_stopping(tmp_path):
    seen, scores = [], iter([0.5, 0.7, 0.6, 0.6, 0.9])

    def dev_eval(model):
        assert isinstance(model, EmbeddingModel)
        seen.append(model)
        return {"ndcg@10": next(scores)}

    cfg = make_config(tmp_path / "run", optim__steps=5, eval__every=1, eval__patience=2)
    tr = Trainer(cfg, splits=synthetic_splits(), dev_eval=dev_eval)
    result = tr.fit()
    assert all(m is tr.model for m in seen) and len(seen) == 4  # 0.5, 0.7 (best), 0.6, 0.6: two without gain
    assert result.stopped_early and result.best_step == 2 and result.best_metric == pytest.approx(0.7)
