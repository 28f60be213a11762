"""Evaluating trained runs: what `lgvq evaluate-*` run. Each function computes the results,
writes them as JSON (by default RUN/eval/NAME.json) and returns them as a typed record
(lgvq.records), whose `written_to` says where.

    results = evaluate_prior_run("runs/prior", seeds=[0, 1, 2], num_prompts=200)
    results.faithful("two_objects")          # the mean over the seeds, for one group of prompts
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from lgvq.api.data import data_config_for
from lgvq.config import load_config
from lgvq.data.code_store import CodeStore
from lgvq.data.datasets import build_dataset
from lgvq.devices import resolve_device
from lgvq.downstream.captioning import CaptionHead
from lgvq.downstream.training import HeadRunConfig
from lgvq.downstream.vqa import VQAHead
from lgvq.errors import InputFileError, NotAlignedError, UsageError
from lgvq.evaluation.alignment_eval import evaluate_alignment
from lgvq.evaluation.head_eval import caption_metrics, generate_captions, vqa_accuracy
from lgvq.evaluation.prior_eval import evaluate_faithfulness, mean_faithfulness, prior_fid, validation_nll
from lgvq.evaluation.results import write_results
from lgvq.evaluation.tokenizer_eval import evaluate_tokenizer
from lgvq.hub import saved_class_name
from lgvq.pipelines import load_pipeline
from lgvq.priors.config import PriorRunConfig
from lgvq.records import (
    AlignmentEvaluation,
    CaptioningEvaluation,
    PriorEvaluation,
    Record,
    TokenizerEvaluation,
    VQAEvaluation,
)
from lgvq.runs import MODEL_CONFIG, RunDir, StoreDir, check_evaluation_name, model_dir
from lgvq.text.encoder import FrozenTextEncoder
from lgvq.tokenizers.model import VQTokenizer

log = logging.getLogger(__name__)
R = TypeVar("R", bound=Record)


def _finish(results: dict, model: Path, out: str | Path | None, name: str, record: type[R]) -> R:
    """Write the results (RUN/eval/NAME.json unless `out`) and return them as `record`."""
    results["model"] = str(model)
    path = write_results(results, out or RunDir.of(model).eval_file(name))
    evaluation = record.from_json(results)
    evaluation.written_to = str(path)
    return evaluation


def evaluate_tokenizer_run(model: str | Path, *, data: str | None = None, overrides: Sequence[str] = (),
                           limit: int | None = None, batch_size: int = 64, device: str | None = None,
                           inception_path: str | None = None, lpips_vgg_path: str | None = None,
                           fid: bool = True, out: str | Path | None = None) -> TokenizerEvaluation:
    """Reconstruction, codebook and (where the data has a scorer) faithfulness numbers of a
    tokenizer on the validation split of its own data or of `data`."""
    model = Path(model)
    tokenizer = VQTokenizer.from_pretrained(model)
    data_cfg = data_config_for(data, model, overrides)
    data_cfg.image_size = tokenizer.config.resolution
    results = evaluate_tokenizer(tokenizer, build_dataset(data_cfg, "validation"), batch_size=batch_size,
                                 limit=limit, device=resolve_device(device), inception_path=inception_path,
                                 lpips_vgg_path=lpips_vgg_path, compute_fid=fid)
    results["data"] = {"source": data_cfg.source, "path": data_cfg.path, "split": "validation"}
    return _finish(results, model, out, "tokenizer", TokenizerEvaluation)


def evaluate_alignment_run(model: str | Path, *, data: str | None = None, overrides: Sequence[str] = (),
                           limit: int | None = None, batch_size: int = 100, device: str | None = None,
                           out: str | Path | None = None) -> AlignmentEvaluation:
    """LG-VQ diagnostics (retrieval, masked-word recall, relation MSE) of a tokenizer saved with its
    alignment modules."""
    model = Path(model)
    tokenizer = VQTokenizer.from_pretrained(model)
    spec = tokenizer.config.alignment
    if not spec:
        raise NotAlignedError(f"{model} holds a tokenizer without alignment modules; evaluate-alignment needs one "
                         f"trained with alignment: lgvq (and lgvq.keep_in_export=true)")
    data_cfg = data_config_for(data, model, overrides)
    data_cfg.image_size = tokenizer.config.resolution
    lg = spec["config"]
    encoder = FrozenTextEncoder(lg["text_encoder"], lg["max_length"], lg["pooling"])
    results = evaluate_alignment(tokenizer, build_dataset(data_cfg, "validation", require_captions=True), encoder,
                                 batch_size=batch_size, limit=limit, device=resolve_device(device))
    return _finish(results, model, out, "alignment", AlignmentEvaluation)


def evaluate_prior_run(prior: str | Path, *, store: str | Path | None = None, seeds: Sequence[int] = (0,),
                       num_prompts: int = 200, limit: int | None = None, fid: bool = True,
                       inception_path: str | None = None, device: str | None = None,
                       out: str | Path | None = None, name: str = "prior", **sampling) -> PriorEvaluation:
    """Validation NLL on the store; where the store's data has a scorer and the prior reads text,
    prompt faithfulness for each sampling seed and their mean (the first seed's images in
    RUN/eval/samples, the others in samples_seedN); FID of the first seed's images against the
    data's validation images. `sampling`: cfg_scale, temperature, top_k, top_p, batch_size,
    best_of, best_of_hard, hard_share, rerank_with. `name`: RUN/eval/NAME.json, and images in
    RUN/eval/NAME/ unless "prior" (an evaluation at other sampling settings beside the run's own)."""
    check_evaluation_name(name)  # before any work: it names the files written last
    run = RunDir.of(prior)
    pipe = load_pipeline(run.root, device=resolve_device(device))
    cfg = load_config(PriorRunConfig, run.config) if run.config.is_file() else None
    given = {k: v for k, v in sampling.items() if v is not None}
    results: dict = {"prior": str(run.root), "seed": seeds[0], "sampling": pipe.defaults | given}
    codes = StoreDir(Path(store or (cfg.store if cfg else "")))
    dataset = None
    if (codes.split("validation") / "store.json").is_file():
        validation = CodeStore(codes.split("validation"))
        results["validation"] = validation_nll(pipe.prior, validation, limit=limit, device=pipe.device)
        dataset = build_dataset(validation.data_config(), "validation")
    else:
        log.warning("no validation split in %s; skipping NLL", codes.root)
    scorer = dataset.scorer() if dataset is not None else None
    if pipe.prior.config.conditioning == "text" and scorer is not None:
        prompts, per_seed = scorer.prompts(num_prompts), {}
        for k, seed in enumerate(seeds):
            samples = run.eval_samples(None if k == 0 else seed, None if name == "prior" else name)
            scored = evaluate_faithfulness(pipe, scorer, prompts, seed=seed, out_dir=samples, **given)
            (samples / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in scored["records"]))
            per_seed[str(seed)] = scored["faithfulness"]
            if k == 0 and fid:
                results["fid"] = prior_fid(scored["images"], dataset, run.eval_dir / "fid", inception_path,
                                           pipe.device)
        results["faithfulness"] = mean_faithfulness(list(per_seed.values()))
        if len(seeds) > 1:
            results["seeds"], results["faithfulness_per_seed"] = list(seeds), per_seed
    return _finish(results, run.model, out, name, PriorEvaluation)


def evaluate_head_run(model: str | Path, *, store: str | Path | None = None, beams: int = 3, limit: int | None = None,
                      device: str | None = None,
                      out: str | Path | None = None) -> CaptioningEvaluation | VQAEvaluation:
    """VQA accuracy per question type, or captioning BLEU / METEOR / ROUGE-L / CIDEr-D, on the
    validation split of the head's store (or `store`)."""
    run = RunDir.of(model)
    folder = model_dir(run.root)
    if saved_class_name(folder) is None:  # before the store: the message names what is missing first
        raise InputFileError(f"{model} holds no trained head (no {MODEL_CONFIG} in {folder}); give a run folder of "
                             f"lgvq train-captioner or train-vqa")
    cfg = load_config(HeadRunConfig, run.config) if run.config.is_file() else None
    validation = CodeStore(StoreDir(Path(store or (cfg.store if cfg else ""))).split("validation"))
    device = resolve_device(device)
    kind = saved_class_name(folder)
    if kind == "VQAHead":
        results = vqa_accuracy(VQAHead.from_pretrained(folder), validation, limit=limit, device=device)
    elif kind == "CaptionHead":
        hyps, refs = generate_captions(CaptionHead.from_pretrained(folder), validation, beams=beams, limit=limit,
                                       device=device)
        results = caption_metrics(hyps, refs) | {"beams": beams, "images": len(hyps),
                                                 "examples": [{"caption": h, "references": r}
                                                              for h, r in zip(hyps[:10], refs[:10])]}
    else:
        raise UsageError(f"{folder} holds a {kind or 'folder of unknown kind'}, not a captioning or VQA head")
    results["kind"] = "vqa" if kind == "VQAHead" else "captioning"
    results["store"] = str(validation.path)
    return _finish(results, folder, out, "head", VQAEvaluation if kind == "VQAHead" else CaptioningEvaluation)
