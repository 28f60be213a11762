"""The typed records of the project's JSON files read what earlier writers wrote and write it back."""

from lgvq.evaluation.tables import alignment_table, caption_table, prior_table, tokenizer_table, vqa_table
from lgvq.records import (AlignmentEvaluation, CaptioningEvaluation, PriorEvaluation, StoreManifest,
                          TokenizerEvaluation, VQAEvaluation, head_evaluation)


def test_a_store_manifest_round_trips_and_keeps_keys_it_does_not_know():
    saved = {"version": 1, "identity": {"split": "train"}, "tokenizer": "runs/tok/model", "vocab_size": 64,
             "token_shape": [4, 4], "tokens_per_position": 1, "seq_len": 16, "num_images": 8, "copies": 1,
             "num_items": 8, "num_classes": None, "class_names": None, "complete": True,
             "text": {"encoder": "minilm", "max_length": 24, "pooling": "auto", "width": 384, "length": 12},
             "written_by_a_newer_version": 1}
    manifest = StoreManifest.from_json(saved)
    assert manifest.seq_len == 16 and manifest.text.width == 384 and manifest.complete
    assert manifest.to_json() == saved
    assert StoreManifest.from_json(saved | {"text": None}).text is None


def test_evaluation_records_read_partial_results_and_the_tables_use_them():
    old = {"num_images": 4, "psnr": 25.0, "ssim": 0.9, "lpips": None, "rfid": None, "codebook_usage": 0.5,
           "perplexity": 20.0, "codebook_size": 64, "tokens_per_image": 16, "a_newer_key": 1}
    t = TokenizerEvaluation.from_json(old)  # written before black-patch codes and the scorer were recorded
    assert t.psnr == 25.0 and t.black_patch_codes is None and t.faithful("one_object") is None
    assert t.to_json()["a_newer_key"] == 1
    t.written_to = "RUN/eval/tokenizer.json"  # where the API wrote it: known, not saved in the file
    assert "written_to" not in t.to_json()
    table = tokenizer_table(t)
    assert "PSNR (dB)           25.0000" in table and "codebook usage (%)  50.0000" in table
    p = PriorEvaluation.from_json({"seed": 3, "validation": {"nll": 0.5, "perplexity": 1.65},
                                   "faithfulness": {"one_object": 0.9, "two_objects": 0.4, "overall": 0.65}})
    assert p.nll == 0.5 and p.sampling_seeds == [3] and p.faithful("two_objects") == 0.4 and p.fid_value is None
    assert "| validation NLL (nats/token) | 0.500 |" in prior_table(p)


def test_alignment_and_head_records_keep_their_json_names():
    """The JSON keys that are not Python names (retrieval_r@1, mask_recall@1/..., CIDEr-D) are read
    into fields and written back as they were."""
    alignment = {"num_images": 5, "retrieval_r@1": 0.2, "retrieval_r@5": 0.5, "retrieval_chance_r@1": 0.01,
                 "mask_recall@1/mask1/own/content": 0.4, "mask_recall@1/mask1/swapped/content": 0.1,
                 "relation_mse": 0.03, "model": "runs/tok/model"}
    a = AlignmentEvaluation.from_json(alignment)
    assert (a.retrieval_r1, a.masked_word("own"), a.masked_word("swapped"), a.masked_word("own", 3)) == \
        (0.2, 0.4, 0.1, None)
    assert a.to_json() == alignment and "retrieval_r@1" in alignment_table(a)
    captioning = {"BLEU-1": 0.6, "BLEU-2": 0.5, "BLEU-3": 0.45, "BLEU-4": 0.4, "METEOR": 0.3, "ROUGE-L": 0.55,
                  "CIDEr-D": 2.5, "beams": 3, "images": 6, "examples": [], "kind": "captioning", "store": "s",
                  "model": "m"}
    c = head_evaluation(captioning)
    assert isinstance(c, CaptioningEvaluation) and c.cider_d == 2.5 and c.to_json() == captioning
    assert "| 0.600 | 0.500 | 0.450 | 0.400 | 0.300 | 0.550 | 2.500 |" in caption_table(c)
    vqa = {"accuracy": 0.5, "questions": 4, "per_type": {"colour": 1.0, "shape": 0.0}, "wups@0.9": 0.6,
           "kind": "vqa", "store": "s", "model": "m"}
    q = head_evaluation(vqa)
    assert isinstance(q, VQAEvaluation) and q.per_type["colour"] == 1.0 and q.extra == {"wups@0.9": 0.6}
    assert q.to_json() == vqa and "| all (4) | 50.0% |" in vqa_table(q)
