"""LARR: LLM-aided real-time scene recommendation (RecSys 2024), trained with PyTorch and served by Triton."""

__version__ = "0.1.0"
