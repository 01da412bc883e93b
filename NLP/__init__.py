"""Llama fine-tuning and the NLP perturbation evaluations (docs/protocols.md, sections 3 and 4)."""
