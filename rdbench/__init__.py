"""rdbench: a benchmark and ablation framework for parameter-efficient fine-tuning of CLIP dual
encoders on remote-sensing image-text retrieval (RSICD, RSITMD), built around the RDB method
(Ning et al., 2025)."""

__version__ = "0.1.0"
