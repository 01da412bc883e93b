"""The tiny models the benchmark trains, their training, the model cache and the
function-preserving reparametrisations.

Models (hidden 32, 2 layers, 2 heads; eager attention so that attention maps can be read):

- ``bert``: transformers ``BertForSequenceClassification``, learned absolute positions
  (palrp family "bert"); reads [CLS] at position 0.
- ``llama``: transformers ``LlamaForSequenceClassification``, RoPE (family "llama"); reads the
  last token (no padding: every sequence has the same length).
- ``vit``: timm ``VisionTransformer`` (deit_tiny layout), learned ``pos_embed`` (family "vit"),
  one patch per grid cell.
- ``eva_rope``: timm ``Eva`` (EVA-02 layout) with 2-D axial RoPE only (``use_abs_pos_emb=False``;
  family "eva"), one patch per grid cell.
- ``bert_nope`` / ``vit_nope``: the same as ``bert`` / ``vit`` with the position table set to
  zero and frozen: no positional encoding, still explained by the same family (its positional
  relevance is exactly 0). Trained on the control tasks only: a bidirectional encoder without
  positions is permutation-invariant and cannot solve the position tasks.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass

import timm
import torch
import transformers as tf
from tqdm import tqdm

from . import tasks as T

HIDDEN, LAYERS, HEADS = 32, 2, 2
#: initial weight std of the transformers models (their default 0.02 leaves a width-32 BERT's
#: position table so small that training stalls for many epochs before it finds positions)
INIT_STD = 0.1

#: model name -> (kind of task it takes, has positional encoding)
MODELS = {"bert": ("text", True), "llama": ("text", True), "bert_nope": ("text", False),
          "vit": ("vision", True), "eva_rope": ("vision", True), "vit_nope": ("vision", False)}


@dataclass(frozen=True)
class TrainConfig:
    train_samples: int = 4000
    val_samples: int = 500
    test_samples: int = 1000
    batch_size: int = 64
    lr: float = 2e-3
    max_epochs: int = 30
    warmup_steps: int = 200          # linear learning-rate warmup
    target_accuracy: float = 0.99
    stop_accuracy: float = 0.997     # validation accuracy that ends training
    retries: int = 1                 # a retry: another initialisation, half the learning rate


def build(model_name: str, task: T.Task, seed: int):
    torch.manual_seed(seed)
    if model_name in ("bert", "bert_nope"):
        config = tf.BertConfig(vocab_size=T.VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                               num_attention_heads=HEADS, intermediate_size=2 * HIDDEN,
                               max_position_embeddings=T.TEXT_LENGTH, type_vocab_size=1,
                               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                               num_labels=task.num_classes, pad_token_id=T.PAD,
                               initializer_range=INIT_STD, attn_implementation="eager")
        model = tf.BertForSequenceClassification(config)
        if model_name == "bert_nope":
            table = model.bert.embeddings.position_embeddings.weight
            with torch.no_grad():
                table.zero_()
            table.requires_grad_(False)
        return model
    if model_name == "llama":
        config = tf.LlamaConfig(vocab_size=T.VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                num_attention_heads=HEADS, num_key_value_heads=HEADS,
                                intermediate_size=2 * HIDDEN,
                                max_position_embeddings=T.TEXT_LENGTH, num_labels=task.num_classes,
                                pad_token_id=T.PAD, initializer_range=INIT_STD,
                                attn_implementation="eager")
        return tf.LlamaForSequenceClassification(config)
    if model_name in ("vit", "vit_nope"):
        model = timm.create_model("deit_tiny_patch16_224", pretrained=False,
                                  img_size=T.GRID * T.CELL, patch_size=T.CELL, embed_dim=HIDDEN,
                                  depth=LAYERS, num_heads=HEADS, mlp_ratio=2.0,
                                  num_classes=task.num_classes)
        if model_name == "vit_nope":
            with torch.no_grad():
                model.pos_embed.zero_()
            model.pos_embed.requires_grad_(False)
        return model
    if model_name == "eva_rope":
        return timm.create_model("eva02_tiny_patch14_224", pretrained=False,
                                 img_size=T.GRID * T.CELL, patch_size=T.CELL, embed_dim=HIDDEN,
                                 depth=LAYERS, num_heads=HEADS, mlp_ratio=2.0,
                                 use_abs_pos_emb=False, num_classes=task.num_classes)
    raise ValueError(f"unknown model {model_name!r}; choose from {', '.join(MODELS)}")


def model_inputs(model_name: str, inputs: torch.Tensor):
    """What ``model(**...)`` / ``palrp.explain`` take for a batch of task inputs."""
    if MODELS[model_name][0] == "vision":
        return inputs
    return {"input_ids": inputs, "attention_mask": torch.ones_like(inputs)}


def logits_of(model, model_name: str, inputs: torch.Tensor, **extra) -> torch.Tensor:
    if MODELS[model_name][0] == "vision":
        return model(inputs)
    return model(**model_inputs(model_name, inputs), **extra).logits


@torch.no_grad()
def accuracy(model, model_name, batch: T.Batch, chunk: int = 500) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(batch.labels), chunk):
        logits = logits_of(model, model_name, batch.inputs[start:start + chunk])
        correct += (logits.argmax(-1) == batch.labels[start:start + chunk]).sum().item()
    return correct / len(batch.labels)


def data_seeds(seed: int) -> tuple[int, int, int]:
    """Seeds of the train, validation and test sets of a model seed (disjoint streams)."""
    return 1000 * seed + 1, 1000 * seed + 2, 1000 * seed + 3


def train_one(model_name, task, seed, config: TrainConfig, init_seed: int, lr: float):
    """Adam on cross-entropy; stops when validation accuracy reaches ``stop_accuracy``."""
    train_seed, val_seed, _ = data_seeds(seed)
    train = T.sample(task, config.train_samples, train_seed)
    val = T.sample(task, config.val_samples, val_seed)
    model = build(model_name, task, init_seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    warmup = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: min(1.0, (step + 1) / config.warmup_steps))
    g = torch.Generator().manual_seed(init_seed)
    val_acc = 0.0
    bar = tqdm(range(config.max_epochs), desc=f"train {task.name}/{model_name}/s{seed}",
               leave=False, dynamic_ncols=True)
    for epoch in bar:
        model.train()
        order = torch.randperm(config.train_samples, generator=g)
        for start in range(0, config.train_samples, config.batch_size):
            idx = order[start:start + config.batch_size]
            loss = torch.nn.functional.cross_entropy(
                logits_of(model, model_name, train.inputs[idx]), train.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            warmup.step()
        val_acc = accuracy(model, model_name, val)
        bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{val_acc:.3f}")
        if val_acc >= config.stop_accuracy:
            break
    bar.close()
    return model.eval(), epoch + 1


def model_key(task_name, model_name, seed, config: TrainConfig) -> str:
    blob = json.dumps({"task": task_name, "model": model_name, "seed": seed,
                       "train": asdict(config), "hidden": HIDDEN, "layers": LAYERS,
                       "heads": HEADS, "version": 1}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def trained(task, model_name, seed, config: TrainConfig, cache_dir, log=print):
    """The trained model and its record ``{task, model, seed, heldout_accuracy, ...}``, from
    ``cache_dir`` when a model of the same training config is there. A model under the target
    held-out accuracy is retrained with another initialisation (``retries`` times) and, if it
    stays under, kept and marked ``below_target``."""
    key = model_key(task.name, model_name, seed, config)
    path = cache_dir / f"{task.name}_{model_name}_s{seed}_{key}.pt"
    if path.exists():
        saved = torch.load(path, weights_only=False)
        model = build(model_name, task, saved["init_seed"])
        model.load_state_dict(saved["state"])
        if model_name.endswith("_nope"):
            _freeze_zero_positions(model)
        return model.eval(), saved["record"], True
    test = T.sample(task, config.test_samples, data_seeds(seed)[2])
    best = None
    for attempt in range(config.retries + 1):
        init_seed = 7919 * seed + 104729 * attempt + 17
        model, epochs = train_one(model_name, task, seed, config, init_seed,
                                  config.lr / 2 ** attempt)
        acc = accuracy(model, model_name, test)
        if best is None or acc > best[1]:
            best = (model, acc, init_seed, epochs, attempt)
        if acc >= config.target_accuracy:
            break
        log(f"  {task.name}/{model_name}/seed {seed}: held-out accuracy {acc:.4f} < "
            f"{config.target_accuracy}; " + ("retraining" if attempt < config.retries
                                              else "kept, marked below_target"))
    model, acc, init_seed, epochs, attempt = best
    record = {"task": task.name, "model": model_name, "seed": seed, "heldout_accuracy": acc,
              "heldout_samples": config.test_samples, "epochs": epochs, "attempts": attempt + 1,
              "below_target": acc < config.target_accuracy}
    torch.save({"state": model.state_dict(), "init_seed": init_seed, "record": record}, path)
    return model, record, False


def _freeze_zero_positions(model):
    table = model.bert.embeddings.position_embeddings.weight if hasattr(model, "bert") \
        else model.pos_embed
    table.requires_grad_(False)


# --- function-preserving reparametrisations ----------------------------------------------

def reparametrised(model, model_name: str, seed: int):
    """A copy of ``model`` computing the same function with other parameters, and its name.

    - additive learned positions (``bert``, ``vit``): the position table's mean row ``c`` is
      moved into the token side (BERT: every word embedding + c, position table - c; ViT: the
      patch projection's bias + c, the patch positions' rows - c; the class token's row keeps
      its position). ``x + p`` is unchanged at every position.
    - RoPE (``llama``): in every layer each rotary pair (i, i + d/2) of every query head is
      scaled by ``s`` and the same pair of its key head by ``1/s`` (``s`` log-uniform in
      [1/2, 2], seeded): a rotation commutes with scaling a pair, so every score q.k is
      unchanged. ``eva_rope``: the same for timm's interleaved pairs (2i, 2i + 1).
    - no positions (``*_nope``): the ``bert``/``vit`` move with the (zero) table's mean is the
      identity, so these get the attention rescaling of queries against keys per head
      dimension instead (BERT: query rows * s, key rows / s).
    """
    model = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed + 555)
    with torch.no_grad():
        if model_name == "bert":
            emb = model.bert.embeddings
            shift = emb.position_embeddings.weight.mean(0)
            emb.word_embeddings.weight += shift
            emb.position_embeddings.weight -= shift
            return model, "position-table mean moved into the word embeddings"
        if model_name == "vit":
            prefix = model.num_prefix_tokens
            shift = model.pos_embed[0, prefix:].mean(0)
            model.patch_embed.proj.bias += shift
            model.pos_embed[0, prefix:] -= shift
            return model, "patch positions' mean moved into the patch-projection bias"
        if model_name == "llama":
            for layer in model.model.layers:
                attn = layer.self_attn
                dim = attn.head_dim
                q_heads = attn.q_proj.out_features // dim
                k_heads = attn.k_proj.out_features // dim
                scale = torch.exp((torch.rand(k_heads, dim // 2, generator=g) * 2 - 1)
                                  * torch.log(torch.tensor(2.0)))
                per_dim = torch.cat([scale, scale], dim=1)               # (k_heads, dim)
                group = q_heads // k_heads
                q_scale = per_dim.repeat_interleave(group, 0).reshape(-1)
                attn.q_proj.weight *= q_scale[:, None]
                attn.k_proj.weight /= per_dim.reshape(-1)[:, None]
                for proj, s in ((attn.q_proj, q_scale), (attn.k_proj, 1 / per_dim.reshape(-1))):
                    if proj.bias is not None:
                        proj.bias *= s
            return model, "rotary pairs of queries scaled by s, of keys by 1/s"
        if model_name == "eva_rope":
            for block in model.blocks:
                attn = block.attn
                d = attn.qkv.out_features // 3
                pairs = torch.exp((torch.rand(d // 2, generator=g) * 2 - 1)
                                  * torch.log(torch.tensor(2.0)))
                scale = pairs.repeat_interleave(2)                       # (2i, 2i + 1) pairs
                attn.qkv.weight[:d] *= scale[:, None]
                attn.qkv.weight[d:2 * d] /= scale[:, None]
                if attn.q_bias is not None:
                    attn.q_bias *= scale
                    attn.k_bias /= scale
            return model, "rotary pairs of queries scaled by s, of keys by 1/s"
        if model_name == "bert_nope":
            for layer in model.bert.encoder.layer:
                att = layer.attention.self
                scale = torch.exp((torch.rand(att.query.out_features, generator=g) * 2 - 1)
                                  * torch.log(torch.tensor(2.0)))
                att.query.weight *= scale[:, None]
                att.query.bias *= scale
                att.key.weight /= scale[:, None]
                att.key.bias /= scale
            return model, "query dimensions scaled by s, key dimensions by 1/s"
        if model_name == "vit_nope":
            for block in model.blocks:
                qkv = block.attn.qkv
                d = qkv.out_features // 3
                scale = torch.exp((torch.rand(d, generator=g) * 2 - 1)
                                  * torch.log(torch.tensor(2.0)))
                qkv.weight[:d] *= scale[:, None]
                qkv.weight[d:2 * d] /= scale[:, None]
                if qkv.bias is not None:
                    qkv.bias[:d] *= scale
                    qkv.bias[d:2 * d] /= scale
            return model, "query dimensions scaled by s, key dimensions by 1/s"
    raise ValueError(f"unknown model {model_name!r}")
