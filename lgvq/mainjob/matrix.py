"""What the main job runs for each dataset, preset and tokenizer kind: config files and fixed
arguments per stage. The one place this matrix is written; lgvq.mainjob.plan turns it into
commands.

    shapes (built in)            quick (default): configs/presets/quick/ overlays the shapes configs
                                 full: the shapes configs as they are
                                 gpu: configs/presets/gpu/ overlays them (the tokenizer and the prior)
    cub | celebahq | coco | textcaps   full only: configs/replicate/ (the papers' settings), data
                                       converted by scripts/convert_dataset.py into DATA_DIR
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lgvq.errors import ConfigError, InputFileError

TOKENIZERS = ("vqgan", "vqgan_lg", "vqct", "vqct_lg", "cvq", "cvq_lg")
PAPER_DATASETS = ("cub", "celebahq", "coco", "textcaps")
DATASETS = ("shapes", *PAPER_DATASETS)
PRESETS = ("quick", "full", "gpu")
STOP_AFTER = ("tokenizer", "prior", "all")
# the stages each shapes preset overlays with configs/presets/PRESET/STAGE.yaml
PRESET_OVERLAYS = {"quick": ("tokenizer", "prior", "captioner", "vqa"), "full": (), "gpu": ("tokenizer", "prior")}

# how each paper dataset's raw release becomes DATA_DIR (README: Replicating the papers on real data)
CONVERT = {
    "cub": "python scripts/convert_dataset.py cub --cub CUB_200_2011 --captions cvpr2016_cub --out {out}",
    "celebahq": "python scripts/convert_dataset.py celebahq --images CelebA-HQ-img --captions celeba-caption "
                "--test-list test/filenames.pickle --out {out}",
    "coco": "python scripts/convert_dataset.py coco --coco COCO_ROOT --out {out}",
    "textcaps": "python scripts/convert_dataset.py textcaps --textcaps TEXTCAPS_ROOT --out {out}",
}


@dataclass(frozen=True)
class DatasetRecipe:
    """One dataset's config files and fixed arguments, stage by stage (config files in the order
    they are layered; an empty tuple of head configs: that head is not trained)."""

    tokenizer: tuple[str, ...]
    cvq: str  # layered on the tokenizer configs for cvq, cvq_lg
    vqct: str  # ... for vqct, vqct_lg
    lgvq: str  # ... for every *_lg tokenizer, last (so LG-VQ's weights are the ones that hold)
    vocab_args: tuple[str, ...]  # lgvq build-vocab (VQCT's word list)
    encode_args: tuple[str, ...]
    prior: tuple[str, ...]
    captioner: tuple[str, ...]
    vqa: tuple[str, ...]
    tokenizer_overrides: tuple[str, ...] = ()  # before the user's own
    # > 0: the prior is evaluated a second time, each image the best of this many samples by the
    # captioner's likelihood of the prompt (lgvq/priors/rerank.py), after both heads are trained
    reranked_best_of: int = 0
    # > reranked_best_of: the half of the prompts whose best of reranked_best_of the captioner rates
    # least likely get this many samples in all (`best_of_hard`)
    reranked_best_of_hard: int = 0


def default_preset(dataset: str) -> str:
    return "quick" if dataset == "shapes" else "full"


def check_choices(dataset: str, preset: str, tokenizer: str, stop_after: str) -> None:
    """ConfigError naming the option, its choices and what was given, for anything outside them."""
    for option, value, choices in (("--dataset", dataset, DATASETS), ("--preset", preset, PRESETS),
                                   ("--tokenizer", tokenizer, TOKENIZERS), ("--stop-after", stop_after, STOP_AFTER)):
        if value not in choices:
            listed = " or ".join(choices) if len(choices) == 2 else f"one of {', '.join(choices[:-1])} or {choices[-1]}"
            raise ConfigError(f"{option} must be {listed} (got {value})")
    if preset != "full" and dataset != "shapes":
        raise ConfigError(f"--preset {preset} is sized for the built-in shapes data; the paper presets "
                          f"(--dataset {dataset}) are full runs")


def shapes_recipe(preset: str) -> DatasetRecipe:
    def layered(config: str, stage: str) -> tuple[str, ...]:
        return (config, f"configs/presets/{preset}/{stage}.yaml") if stage in PRESET_OVERLAYS[preset] else (config,)

    return DatasetRecipe(
        tokenizer=layered("configs/tokenizer/vqgan_shapes.yaml", "tokenizer"),
        cvq="configs/tokenizer/cvq_shapes.yaml", vqct="configs/tokenizer/vqct_shapes.yaml",
        lgvq="configs/lgvq/shapes.yaml",
        vocab_args=("--source", "encoder_vocab", "--max-words", "128"),  # shapes captions hold a dozen words
        encode_args=("--text-max-length", "24"),
        prior=layered("configs/prior/shapes_t2i.yaml", "prior"),
        captioner=layered("configs/heads/shapes_captioner.yaml", "captioner"),
        vqa=layered("configs/heads/shapes_vqa.yaml", "vqa"),
        reranked_best_of=4 if preset == "quick" else 0, reranked_best_of_hard=16 if preset == "quick" else 0)


def paper_recipe(dataset: str, data_dir: str) -> DatasetRecipe:
    """The papers' settings (256 px, f = 16, batch 8) on a converted release in data_dir."""
    if not (Path(data_dir) / "train" / "metadata.jsonl").is_file():
        raise InputFileError(
            f"--dataset {dataset} needs its images and captions in {data_dir} (train/ and validation/ with "
            f"metadata.jsonl), and {data_dir}/train/metadata.jsonl does not exist. Download the raw release "
            f"(README: Replicating the papers on real data), then convert it: "
            f"{CONVERT[dataset].format(out=data_dir)}, or point DATA_DIR (--data-dir) at an existing converted folder")
    return DatasetRecipe(
        tokenizer=("configs/replicate/vqgan_f16.yaml", f"configs/replicate/{dataset}.yaml"),
        cvq="configs/replicate/cvq.yaml", vqct="configs/replicate/vqct.yaml",
        # no official COCO weights: COCO aligns with TextCaps' settings
        lgvq=f"configs/lgvq/{'textcaps' if dataset == 'coco' else dataset}.yaml",
        vocab_args=("--source", "captions", "--data", data_dir),  # the paper's mining
        encode_args=(),
        prior=("configs/replicate/prior_t2i.yaml",),
        captioner=("configs/heads/cub_captioner.yaml",) if dataset == "cub" else (),  # the paper's Table 11
        vqa=(),  # COCO-QA is its own dataset: configs/heads/cocoqa_vqa.yaml
        tokenizer_overrides=(f"data.path={data_dir}",))


def recipe(dataset: str, preset: str, data_dir: str | None = None) -> DatasetRecipe:
    if dataset == "shapes":
        return shapes_recipe(preset)
    return paper_recipe(dataset, data_dir or f"data/{dataset}")
