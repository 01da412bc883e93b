"""modules/targets.py: the one target resolver of vision and text, and the one parser of
typed targets (numbers and names) of both command lines."""
import pytest
import torch

from palrp.modules.targets import index_from_spec, resolve_target

torch.set_num_threads(1)


def test_resolve_target_forms():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    assert resolve_target(None, logits).tolist() == [1, 0]           # the predictions
    assert resolve_target(2, logits).tolist() == [2, 2]              # one index for all
    assert resolve_target([0, 1], logits).tolist() == [0, 1]         # one per sample
    assert resolve_target(torch.tensor([1, 2]), logits).tolist() == [1, 2]
    given = torch.tensor([1, 2])
    out = resolve_target(given, logits)
    out[0] = 0
    assert given.tolist() == [1, 2]                                  # the caller's tensor is not aliased


@pytest.mark.parametrize("target, message", [
    (0.7, "integer index"),
    (True, "integer index"),
    ([0, 1, 2], "3 entries for a batch of 2"),
    (3, r"target 3 is outside the model's 3 classes \(0..2\)"),
    (-1, "target -1 is outside"),
])
def test_resolve_target_refusals(target, message):
    with pytest.raises(ValueError, match=message):
        resolve_target(target, torch.zeros(2, 3))


def test_resolve_target_names_the_outputs():
    with pytest.raises(ValueError, match="outside the model's 5 vocabulary entries"):
        resolve_target(9, torch.zeros(1, 5), "vocabulary entries")


def test_index_from_spec_numbers_and_names():
    names = ["cat", "Dog", "hot dog"]
    assert index_from_spec("2", 3, names) == 2 and index_from_spec(" +1 ", 3, names) == 1
    assert index_from_spec(" Hot Dog ", 3, names) == 2
    assert index_from_spec("NEGATIVE", 2, {"positive": 0, "negative": 1}) == 1   # a label2id
    with pytest.raises(ValueError, match=r"outside the model's 3 classes \(0..2\)"):
        index_from_spec("3", 3, names)
    with pytest.raises(ValueError, match="did you mean 'Dog', 'hot dog'"):
        index_from_spec("do", 3, names)
    with pytest.raises(ValueError, match="its classes: 'positive', 'negative'"):
        index_from_spec("neutral", 2, {"positive": 0, "negative": 1})
    with pytest.raises(ValueError, match=r"names 2 classes \(\[0, 1\]\)"):
        index_from_spec("a", 2, ["A", "a"])
    with pytest.raises(ValueError, match="no names for its vocabulary entries"):
        index_from_spec("the", 9, None, "vocabulary entries")
