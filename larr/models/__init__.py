"""Layer 2: the pure PyTorch modules — the text embedder, the CTR model and its backbones.

Imported by training (to fit them), serving's torch runtime and export (to load and convert them);
imports only layer 1 (``larr.contract``, ``larr.text``, ``larr.tokenization``, ``larr.data``).
"""
