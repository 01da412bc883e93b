"""What every benchmark driver shares: data-parallel sharding under torchrun / accelerate,
and resumable, append-only per-sample result stores with atomic final outputs."""
from .distributed import DistContext, init_distributed
from .store import SampleStore, atomic_write_json, atomic_write_text

__all__ = ["DistContext", "init_distributed", "SampleStore", "atomic_write_json",
           "atomic_write_text"]
