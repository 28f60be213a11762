"""The typed records of the project's JSON files read what earlier writers wrote and write it back."""

from lgvq.evaluation.tables import prior_table, tokenizer_table
from lgvq.records import PriorEvaluation, StoreManifest, TokenizerEvaluation


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
           "perplexity": 20.0, "codebook_size": 64, "tokens_per_image": 16, "written_to": "RUN/eval/tokenizer.json"}
    t = TokenizerEvaluation.from_json(old)  # written before black-patch codes and the scorer were recorded
    assert t.psnr == 25.0 and t.black_patch_codes is None and t.faithful("one_object") is None
    assert t.to_json()["written_to"] == "RUN/eval/tokenizer.json"
    table = tokenizer_table(old)
    assert "PSNR (dB)           25.0000" in table and "codebook usage (%)  50.0000" in table
    p = PriorEvaluation.from_json({"seed": 3, "validation": {"nll": 0.5, "perplexity": 1.65},
                                   "faithfulness": {"one_object": 0.9, "two_objects": 0.4, "overall": 0.65}})
    assert p.nll == 0.5 and p.sampling_seeds == [3] and p.faithful("two_objects") == 0.4 and p.fid_value is None
    assert "| validation NLL (nats/token) | 0.500 |" in prior_table(p.to_json())
