"""LG-VQ diagnostics on a validation set (`lgvq evaluate-alignment`).

- image-to-text retrieval R@1 / R@5: the visual [CLS] against every caption's sentence feature
  (a hit when the retrieved caption's text equals the image's own);
- masked-word Recall@1 with exactly 1 and 3 words masked (LG-VQ Table 3), with each image's own
  codes and with another image's codes (the batch rolled by one): if the predictor reads the
  image, swapped recall drops;
- code-word relation MSE (Table 4): L_ras on validation pairs.
Recall is also reported on the dataset's content words where it names them (`content`; on shapes
the colour and shape words, where chance is 1/8 and 1/3).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from lgvq.alignment.lgvq import exact_word_mask
from lgvq.alignment.losses import ras_loss
from lgvq.data.datasets import ImageTextDataset
from lgvq.data.loader import eval_loader
from lgvq.errors import DataError, NotAlignedError
from lgvq.text.cache import TextFeatureCache
from lgvq.text.encoder import FrozenTextEncoder
from lgvq.tokenizers.model import VQTokenizer


@torch.no_grad()
def evaluate_alignment(model: VQTokenizer, dataset: ImageTextDataset, encoder: FrozenTextEncoder,
                       batch_size: int = 64, limit: int | None = None, device: str = "cpu", seed: int = 0,
                       progress: bool = True) -> dict:
    if model.aligner is None:
        raise NotAlignedError("this tokenizer was saved without alignment modules (alignment: none, or "
                              "lgvq.keep_in_export=false); retrain with them kept to run the diagnostics")
    model, encoder = model.to(device).eval(), encoder.to(device)
    align = model.aligner
    cache = TextFeatureCache(encoder)
    special = torch.tensor(sorted(encoder.special_token_ids()), device=device)
    emb = encoder.token_embedding_matrix()
    content_ids = {i for w in dataset.content_words() or () for i in encoder.tokenizer.convert_tokens_to_ids([w])
                   if i != encoder.tokenizer.unk_token_id}
    gen = torch.Generator().manual_seed(seed)
    cls_all, sent_all, captions = [], [], []
    hits = {f"mask{k}_{kind}_{scope}": 0 for k in (1, 3) for kind in ("own", "swapped") for scope in ("all", "content")}
    totals = {f"mask{k}_{scope}": 0 for k in (1, 3) for scope in ("all", "content")}
    ras_sum, ras_n = 0.0, 0
    for batch in tqdm(eval_loader(dataset, batch_size, limit=limit), desc="evaluate alignment", disable=not progress):
        if len(batch["caption"]) < 2:
            continue
        images = batch["image"].to(device)
        quantized = model.quantizer.embed(model.encode(images))
        z_vt = align.visual_tokens(quantized)
        text = cache(batch["caption"]).to(device)
        cls_all.append(align.image_embedding(z_vt).cpu())
        sent_all.append(text.sentence.cpu())
        captions += batch["caption"]
        maskable = text.mask & ~torch.isin(text.input_ids, special)
        if align.predictor is not None:
            for k in (1, 3):
                masked = exact_word_mask(maskable, k, gen)
                target = text.input_ids[masked]
                content = torch.tensor([int(t) in content_ids for t in target], dtype=torch.bool, device=device)
                totals[f"mask{k}_all"] += target.numel()
                totals[f"mask{k}_content"] += int(content.sum())
                for kind, visual in (("own", z_vt), ("swapped", z_vt.roll(1, dims=0))):
                    pred = align.predict_masked(visual, text, masked, emb).argmax(-1)
                    correct = pred == target
                    hits[f"mask{k}_{kind}_all"] += int(correct.sum())
                    hits[f"mask{k}_{kind}_content"] += int((correct & content).sum())
        if align.code_proj is not None:
            codes = align.relation_codes(quantized, z_vt[:, 1:], text.tokens)
            ras_sum += float(ras_loss(text.tokens, codes, text.mask)) * len(batch["caption"])
            ras_n += len(batch["caption"])
    if not captions:
        raise DataError("the evaluation set has no readable image-caption pairs")
    results: dict = {"num_images": len(captions)}
    results |= retrieval(torch.cat(cls_all), torch.cat(sent_all), captions)
    for key, n in totals.items():
        k, scope = key.split("_")
        for kind in ("own", "swapped"):
            results[f"mask_recall@1/{k}/{kind}/{scope}"] = hits[f"{k}_{kind}_{scope}"] / n if n else None
    results["relation_mse"] = ras_sum / ras_n if ras_n else None
    return results


def retrieval(image_emb: torch.Tensor, text_emb: torch.Tensor, captions: list[str]) -> dict:
    """Image-to-text R@1 / R@5 over the set; a retrieved caption counts if its text is the
    image's own (identical captions of different images are not penalised)."""
    sim = torch.nn.functional.normalize(image_emb, dim=-1) @ torch.nn.functional.normalize(text_emb, dim=-1).t()
    top = sim.topk(min(5, sim.shape[1]), dim=1).indices
    hit1 = hit5 = 0
    for i, row in enumerate(top.tolist()):
        texts = [captions[j] for j in row]
        hit1 += texts[0] == captions[i]
        hit5 += captions[i] in texts
    n = len(captions)
    unique = len(set(captions))
    return {"retrieval_r@1": hit1 / n, "retrieval_r@5": hit5 / n, "retrieval_chance_r@1": 1 / unique}
