"""The ImageNet perturbation benchmark (docs/protocols.md, section 2): the protocol (:mod:`.protocol`) and the
stage-1 store of explanation maps (:mod:`.map_store`); the driver is ``analyze_pert_results.py``."""
from .map_store import MapReader, MapWriter, stored_indices
from .protocol import (MODES, REPLACEMENTS, STEPS, TESTS, auc_steps, auc_with_clean, perturb,
                       predict_perturbed, removal_masks, summarize)

__all__ = ["MODES", "REPLACEMENTS", "STEPS", "TESTS", "MapReader", "MapWriter", "auc_steps",
           "auc_with_clean", "perturb", "predict_perturbed", "removal_masks", "stored_indices",
           "summarize"]
