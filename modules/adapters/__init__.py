"""Adapters: how the engine reaches each library's modules (timm, transformers), the only place that knows their internals."""
