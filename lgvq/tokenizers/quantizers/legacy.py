"""Reading the quantizer's older layouts, in one place.

- Run configs (YAML) written before the quantizer got its own section: `model.codebook_size`,
  `model.quantizer: vqct`, `model.online_clustering: true`, `model.cvq_decay`, ...
  (`upgrade_model_section`, applied to each config layer as it loads).
- Saved tokenizers (config.json) written with flat quantizer arguments instead of
  `quantizer_config`, and VQCT tokenizers saved before `vqct.eval_codebook` existed
  (`upgrade_saved_config`, applied when a tokenizer loads).

Missing keys take QuantizerConfig's defaults, which are what the flat constructor had, except
where noted below: there a saved model keeps the behaviour it was trained with.
"""

from __future__ import annotations

from dataclasses import asdict

from lgvq.tokenizers.quantizers.config import quantizer_config_from_dict

# flat `model.X` keys (and the flat constructor arguments of a saved tokenizer) -> their place in
# model.quantizer
FLAT_KEYS = {
    **{k: k for k in ("codebook_size", "codebook_dim", "l2_norm", "beta", "legacy_beta", "usage_window",
                      "dead_code_restart", "restart_every", "data_init", "restart_sampling")},
    "cvq_decay": "cvq.decay", "cvq_anchor": "cvq.anchor", "cvq_contrastive": "cvq.contrastive",
    "vqct_vocab": "vqct.vocab", "vqct_top_k": "vqct.top_k", "vqct_transfer": "vqct.transfer",
    "vqct_dropout": "vqct.dropout",
}

# VQCT tokenizers saved before the fixed dropout draw decode with the deterministic codebook (and
# hold no draw in their weights)
SAVED_VQCT_DEFAULTS = {"eval_codebook": "mean"}


def _put(nested: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for parent in parents:
        nested = nested.setdefault(parent, {})
    nested[leaf] = value


def _move_flat_keys(flat: dict, nested: dict) -> None:
    """Pop the flat keys of `flat` into their places in the nested quantizer dict."""
    for old, new in FLAT_KEYS.items():
        if old in flat:
            _put(nested, new, flat.pop(old))


def upgrade_model_section(model: dict) -> dict:
    """A run config's `model:` section in the flat layout -> the nested one; new layouts pass."""
    model = dict(model)
    quantizer = model.pop("quantizer", None)
    nested = dict(quantizer) if isinstance(quantizer, dict) else {}
    if isinstance(quantizer, str):
        nested["kind"] = quantizer
    if model.pop("online_clustering", False) and nested.get("kind", "vq") == "vq":
        nested["kind"] = "cvq"
    _move_flat_keys(model, nested)
    if nested:
        model["quantizer"] = nested
    return model


def upgrade_saved_config(config: dict) -> dict:
    """A saved tokenizer's config.json -> one whose `quantizer_config` QuantizerConfig reads."""
    config = dict(config)
    if "quantizer_config" not in config:  # flat constructor arguments
        q: dict = {}
        _move_flat_keys(config, q)
        online = config.pop("online_clustering", False)
        spec = config.pop("vqct", None)  # VQCT's sizes and options, as one dict
        q["kind"] = "vqct" if spec else "cvq" if online else "vq"
        if spec:  # VQCT's lookup was read from its spec (saved before it honoured l2_norm: Euclidean)
            spec = dict(spec)
            q["l2_norm"] = spec.pop("l2_norm", False)
            q["vqct"] = spec
        config["quantizer_config"] = q
    q = config["quantizer_config"]
    if q.get("kind") == "vqct":
        q = q | {"vqct": SAVED_VQCT_DEFAULTS | q.get("vqct", {})}
    config["quantizer_config"] = asdict(quantizer_config_from_dict(q))  # every key, as saved today
    return config
