"""gcl: Generalized Contrastive Learning for retrieval and ranking from graded relevance.

Importing the package is cheap: heavy dependencies (torch, sentence-transformers, bm25s) are
imported inside the functions that use them.
"""

__version__ = "0.1.0"
