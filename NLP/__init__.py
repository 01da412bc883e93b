"""Llama fine-tuning and the NLP perturbation evaluations (SPEC sections 6 and 7)."""
