"""Model health checks shared by every loader (:mod:`.checkpoints`, :mod:`.text_models`,
:mod:`.hub`): a model whose parameters hold NaN or infinite values gives meaningless logits and
relevances (or a ``FloatingPointError`` deep inside a run), so it is refused before any work
with one line naming the first bad parameter."""
from __future__ import annotations

__all__ = ["first_nonfinite", "first_nonfinite_parameter", "check_finite_parameters"]


def first_nonfinite(named_tensors) -> tuple[str, int, int, bool] | None:
    """``(name, non-finite count, size, holds a NaN)`` of the first floating-point tensor of
    ``named_tensors`` (``(name, tensor)`` pairs) holding a NaN or infinite value, or None when
    all are finite. Tensors on the meta device (not materialised) are skipped."""
    import torch

    for name, tensor in named_tensors:
        if tensor.device.type == "meta" or not tensor.is_floating_point():
            continue
        with torch.no_grad():
            finite = torch.isfinite(tensor)
            if bool(finite.all()):
                continue
            return name, int((~finite).sum()), tensor.numel(), bool(torch.isnan(tensor).any())
    return None


def first_nonfinite_parameter(model) -> tuple[str, int, int] | None:
    """``(name, non-finite count, size)`` of the first parameter of ``model`` (in
    ``named_parameters`` order) holding a NaN or infinite value, or None when all are finite."""
    found = first_nonfinite(model.named_parameters())
    return None if found is None else found[:3]


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
