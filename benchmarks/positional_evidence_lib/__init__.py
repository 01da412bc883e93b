"""The positional-evidence benchmark (benchmarks/positional_evidence.py, docs/positional_evidence.md):
tasks with known evidence per sample, tiny models trained on them, attribution methods, metrics
against the ground truth and the report. Small modules: :mod:`.tasks`, :mod:`.models`,
:mod:`.methods`, :mod:`.metrics`, :mod:`.report`, :mod:`.run`."""
