"""Evaluation of the downstream heads on a code store's validation split.

- VQA: accuracy over every question-answer pair, overall and per question type.
- Captioning: BLEU-1..4, METEOR, ROUGE-L and CIDEr-D through `pycocoevalcap` (the COCO caption
  evaluation code; its PTB tokenizer and METEOR run Java), against all of an image's captions.
"""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict

import torch
from tqdm.auto import tqdm

from lgvq.data.code_store import CodeStore


@torch.no_grad()
def vqa_accuracy(head, store: CodeStore, batch_size: int = 32, limit: int | None = None,
                 device: str | torch.device = "cpu") -> dict:
    """Accuracy over every question of the first `limit` validation items, `batch_size` images a
    pass, each image's questions read together (VQAHead: the answers of separate passes)."""
    head = head.to(device).eval()
    items = [(pos, store.qa[store.image_of(store.items[pos])])
             for pos in range(len(store) if limit is None else min(limit, len(store)))]
    items = [(pos, qa) for pos, qa in items if qa]
    hits: dict[str, list[bool]] = defaultdict(list)
    pairs_seen: list[tuple[str, str]] = []
    for start in tqdm(range(0, len(items), batch_size), desc="VQA", leave=False):
        chunk = items[start:start + batch_size]
        codes = store.batch([p for p, _ in chunk])["tokens"]
        answers = head.answer(codes, [[q["question"] for q in qa] for _, qa in chunk])
        for (_, qa), given in zip(chunk, answers):
            for q, a in zip(qa, given):
                hits[q.get("type", "all")].append(a == q["answer"])
                pairs_seen.append((a, q["answer"]))
    every = [h for v in hits.values() for h in v]
    return {"accuracy": sum(every) / max(len(every), 1), "questions": len(every),
            "per_type": {k: sum(v) / len(v) for k, v in sorted(hits.items())}} | wups(pairs_seen)


def wups(pairs: list[tuple[str, str]]) -> dict:
    """WUPS@0.9 and @0.0 (Malinowski and Fritz) of (predicted, true) one-word answers, through
    NLTK's WordNet when it and its data are installed; otherwise the reason it was skipped."""
    try:
        from nltk.corpus import wordnet as wn

        wn.ensure_loaded()
    except (ImportError, LookupError) as e:
        return {"wups": None, "wups_skipped": f"WUPS needs nltk with WordNet data ({type(e).__name__})"}

    def similarity(a: str, b: str, threshold: float) -> float:
        if a == b:
            return 1.0
        best = max((x.wup_similarity(y) or 0.0 for x in wn.synsets(a) for y in wn.synsets(b)), default=0.0)
        return best if best >= threshold else 0.1 * best

    n = max(len(pairs), 1)
    return {f"wups@{t}": sum(similarity(p, g, t) for p, g in pairs) / n for t in (0.9, 0.0)}


@torch.no_grad()
def generate_captions(head, store: CodeStore, beams: int = 1, batch_size: int = 64, limit: int | None = None,
                      device: str | torch.device = "cpu") -> tuple[list[str], list[list[str]]]:
    head = head.to(device).eval()
    n = len(store) if limit is None else min(limit, len(store))
    hyps, refs = [], []
    for start in tqdm(range(0, n, batch_size), desc="captioning", leave=False):
        positions = list(range(start, min(n, start + batch_size)))
        codes = store.batch(positions)["tokens"].to(device)
        hyps += head.generate(codes, beams=beams)
        refs += [[store.texts[r] for r in store.captions[store.image_of(store.items[p])]] for p in positions]
    return hyps, refs


def caption_metrics(hyps: list[str], refs: list[list[str]]) -> dict[str, float]:
    """COCO caption metrics of hypotheses against reference lists (SPICE left out: it downloads)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": r} for r in rs] for i, rs in enumerate(refs)})
    res = tok.tokenize({i: [{"caption": h or "-"}] for i, h in enumerate(hyps)})
    out: dict[str, float] = {}
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its length statistics
        bleu, _ = Bleu(4).compute_score(gts, res)
    out |= {f"BLEU-{i + 1}": float(b) for i, b in enumerate(bleu)}
    out["METEOR"] = float(Meteor().compute_score(gts, res)[0])
    out["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    out["CIDEr-D"] = float(Cider().compute_score(gts, res)[0])
    return out
