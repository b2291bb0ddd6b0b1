"""Diagnostics of a run beyond recall: per-tower gradient balance during training
(:mod:`~rdbench.diagnostics.gradients`) and the geometry of the embeddings of a split
(:mod:`~rdbench.diagnostics.embedding`); docs/diagnostics.md describes them."""
