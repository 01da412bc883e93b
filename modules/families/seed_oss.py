"""Seed-OSS: Llama's map (q/k/v biases are plain: the bias absorbs its share)."""
from ._transformers import rotary_family

FAMILY = rotary_family("seed_oss", "SeedOss", "seed_oss", order=34)
