"""LoRA for the IMDB fine-tuning on every text family (palrp/nlp/imdb_model.lora_targets): adapters on
every linear projection of the base model, the classification head trained in full, nothing
else trainable, and the adapted model equal to the stock one before training (LoRA's B = 0)."""
import copy

import pytest
import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers.pytorch_utils import Conv1D

from palrp.nlp.imdb_model import lora_targets
from text_families_fixtures import FAMILIES, random_ids, tiny

torch.set_num_threads(1)


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_targets_every_projection_and_trains_the_head(family):
    model = tiny(family, "classifier", impl="eager")
    targets, head = lora_targets(model)
    linear = {name for name, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))}
    head_linear = {n for n in linear if n.split(".")[0] in head}
    assert set(targets) == linear - head_linear and targets     # every base projection, no head one
    assert head and all(n.split(".")[0] == model.base_model_prefix for n in targets)
    stock = copy.deepcopy(model)
    adapted = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=2, lora_alpha=4,
                                               target_modules=targets, modules_to_save=list(head)))
    trainable = [n for n, p in adapted.named_parameters() if p.requires_grad]
    assert sum("lora_A" in n for n in trainable) == len(targets)
    others = [n for n in trainable if "lora_" not in n]
    assert others and all(".modules_to_save." in n for n in others), others
    ids = random_ids(family, 2, 6)
    with torch.no_grad():
        torch.testing.assert_close(adapted(input_ids=ids).logits, stock(input_ids=ids).logits)
