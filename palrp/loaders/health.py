"""Model health checks shared by every loader (:mod:`.checkpoints`, :mod:`.text_models`,
:mod:`.hub`): a model whose parameters hold NaN or infinite values gives meaningless logits and
relevances (or a ``FloatingPointError`` deep inside a run), so it is refused before any work
with one line naming the first bad parameter."""
from __future__ import annotations

__all__ = ["first_nonfinite_parameter", "check_finite_parameters"]


def first_nonfinite_parameter(model) -> tuple[str, int, int] | None:
    """``(name, non-finite count, size)`` of the first parameter of ``model`` (in
    ``named_parameters`` order) holding a NaN or infinite value, or None when all are finite.
    Parameters on the meta device (not materialised) are skipped."""
    import torch

    for name, param in model.named_parameters():
        if param.device.type == "meta" or not param.is_floating_point():
            continue
        with torch.no_grad():
            if bool(torch.isfinite(param).all()):
                continue
            bad = int((~torch.isfinite(param)).sum())
        return name, bad, param.numel()
    return None


def check_finite_parameters(model, source, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` (the caller's one-line error class) when a parameter of ``model``, read
    from ``source`` (a path or a description), is not finite: the line names the parameter and
    how many of its values are NaN/inf."""
    found = first_nonfinite_parameter(model)
    if found is None:
        return
    name, bad, size = found
    raise error(f"{source} has non-finite weights: parameter {name} holds {bad} NaN/inf "
                f"value(s) of {size}; the model is broken (e.g. a diverged training): pass a "
                "checkpoint with finite weights")
