"""What every benchmark driver shares: data-parallel sharding under torchrun / accelerate,
resumable, append-only per-sample result stores tied to the run that made them, atomic output
files, typed-option errors (:mod:`palrp.runtime.options`), what the vision drivers share once their
flags are parsed (:mod:`palrp.runtime.vision_run`), and -- the one module of command-line
flags -- :mod:`palrp.runtime.cli`."""
from .distributed import DistContext, init_distributed, resolve_device
from .store import (SampleStore, atomic_output, atomic_output_dir, atomic_write_bytes,
                    atomic_write_json, atomic_write_text, check_run, fingerprint, release_locks,
                    run_lock)

__all__ = ["DistContext", "init_distributed", "resolve_device", "SampleStore", "atomic_output",
           "atomic_output_dir", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
           "check_run", "fingerprint", "release_locks", "run_lock"]
