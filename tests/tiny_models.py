"""A tiny, randomly initialised sentence-transformers model built locally (no download).

It reuses the offline MiniLM tokenizer and a 2-layer, 32-wide BERT, so tests that train or
encode run in seconds on the CPU.
"""

from __future__ import annotations

from pathlib import Path


def make_tiny_sentence_transformer(directory: Path, *, seed: int = 0, dropout: float = 0.1) -> Path:
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    from gcl.encoders.text import minilm_path

    directory = Path(directory)
    hf_dir = directory / "hf"
    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    BertModel(cfg).save_pretrained(str(hf_dir))
    tok.save_pretrained(str(hf_dir))
    transformer = models.Transformer(str(hf_dir), max_seq_length=32)
    pooling = models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode="mean")
    st_dir = directory / "st"
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(st_dir))
    return st_dir
