"""Deterministic, resumable batch streams for training, and plain loaders for evaluation.

A training stream is infinite: epoch `e` visits a permutation drawn from `(seed, e)`, split
evenly across processes. Batch `k` of the stream is therefore fixed by the config alone, and
resuming at batch `k` needs no saved sampler state.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator

import torch

from lgvq.config import DataConfig
from lgvq.data.datasets import ImageTextDataset, RecordDecoder, load_hf_dataset, sample_rng
from lgvq.errors import DataError


def collate(items: list[dict | None]) -> dict:
    """Stack items into a batch; unreadable images (None) are dropped and counted in `skipped`."""
    kept = [it for it in items if it is not None]
    batch = {
        "image": torch.stack([it["image"] for it in kept]) if kept else torch.empty(0),
        "caption": [it["caption"] for it in kept],
        "captions": [it["captions"] for it in kept],
        "qa": [it.get("qa", []) for it in kept],
        "label": torch.tensor([it["label"] for it in kept], dtype=torch.long),
        "index": torch.tensor([it["index"] for it in kept], dtype=torch.long),
        "skipped": len(items) - len(kept),
    }
    return batch


class EpochBatchSampler:
    """Yields lists of `(index, epoch)` keys forever, starting at batch `start_batch`."""

    def __init__(self, num_items: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 start_batch: int = 0, shuffle: bool = True):
        per_rank = num_items // world_size
        if batch_size < 1:  # an empty batch would never finish an epoch: the loop below would spin forever
            raise DataError(f"train.batch_size must be >= 1 (got {batch_size})")
        if per_rank < batch_size:
            raise DataError(f"{num_items} items cannot fill one batch of {batch_size} on each of "
                             f"{world_size} processes; lower train.batch_size or add data")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world_size, self.start_batch, self.shuffle = rank, world_size, start_batch, shuffle
        self.batches_per_epoch = per_rank // batch_size

    def epoch_order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            order = torch.arange(self.num_items)
        else:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.num_items, generator=g)
        per_rank = self.num_items // self.world_size
        return order[self.rank::self.world_size][:per_rank]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, offset = divmod(self.start_batch, self.batches_per_epoch)
        while True:
            order = self.epoch_order(epoch).tolist()
            for b in range(offset, self.batches_per_epoch):
                chunk = order[b * self.batch_size:(b + 1) * self.batch_size]
                yield [(i, epoch) for i in chunk]
            epoch, offset = epoch + 1, 0


class StreamingImageText(torch.utils.data.IterableDataset):
    """A streamed hub/folder dataset: shuffled with a buffer per epoch, sharded by process,
    resumed by skipping the examples already seen."""

    def __init__(self, cfg: DataConfig, require_captions: bool, rank: int, world_size: int, skip_examples: int):
        from datasets import Image as ImageFeature
        from datasets.distributed import split_dataset_by_node

        self.cfg, self.skip_examples = cfg, skip_examples
        where = f"{cfg.path} [{cfg.train_split}]"
        stream = load_hf_dataset(cfg, cfg.train_split, streaming=True)
        columns = stream.column_names or list(next(iter(stream.take(1)), {}).keys())
        self.decode = RecordDecoder(columns, cfg, True, where, require_captions)
        stream = stream.cast_column(cfg.image_column, ImageFeature(decode=False))
        self.stream = split_dataset_by_node(stream, rank=rank, world_size=world_size)

    def __iter__(self):
        seen = 0
        for epoch in itertools.count():
            shuffled = self.stream.shuffle(seed=self.cfg.seed + epoch, buffer_size=self.cfg.shuffle_buffer)
            empty = True
            for i, row in enumerate(shuffled):
                empty = False
                seen += 1
                if seen <= self.skip_examples:
                    continue
                yield self.decode(row, i, sample_rng(self.cfg.seed, epoch, i))
            if empty:
                raise DataError(f"{self.cfg.path} [{self.cfg.train_split}] is empty")


def train_stream(dataset: ImageTextDataset | None, cfg: DataConfig, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, start_batch: int = 0, require_captions: bool = False) -> Iterator[dict]:
    """Infinite iterator of training batches, starting at batch `start_batch`."""
    if cfg.streaming:
        if cfg.num_workers:
            warnings.warn("data.num_workers is ignored with data.streaming=true", stacklevel=2)
        ds = StreamingImageText(cfg, require_captions, rank, world_size, start_batch * batch_size)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, collate_fn=collate,
                                             generator=_own_generator(seed))
        return iter(loader)
    sampler = EpochBatchSampler(len(dataset), batch_size, seed, rank, world_size, start_batch)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                                         num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0,
                                         generator=_own_generator(seed))
    return iter(loader)


def _own_generator(seed: int) -> torch.Generator:
    """A DataLoader draws its workers' base seed when its iterator starts; from its own generator
    that draw leaves the global RNG alone, so a resumed run's RNG stream matches a straight one."""
    return torch.Generator().manual_seed(seed)


def eval_loader(dataset: ImageTextDataset, batch_size: int, num_workers: int = 0,
                limit: int | None = None) -> torch.utils.data.DataLoader:
    """In-order batches over (the first `limit` items of) a dataset, no augmentation."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    keys = [(i, 0) for i in range(n)]
    batches = [keys[i:i + batch_size] for i in range(0, n, batch_size)]
    return torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=num_workers,
                                       generator=_own_generator(0))

