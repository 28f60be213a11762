"""taming-transformers' convolutional encoder and decoder, built from diffusers' blocks.

Channels `ch * ch_mult[i]` per level, `num_res_blocks` residual blocks per level (the decoder
has one more, as in taming), attention blocks at the resolutions listed in `attn_resolutions`,
a mid block with attention, and a downsampling factor of 2 ** (len(ch_mult) - 1).

`build_patch_encoder` is the alternative `encoder_type: patch`: each f x f patch is encoded on
its own (a stride-f convolution, then residual per-position MLP blocks; no normalisation or
attention across positions). Identical patches get identical features, hence identical codes:
taming's encoder sees ~77 px around each 4 x 4 patch (and GroupNorm statistics and attention over
the whole image), so the same black background patch gets a different feature, and with a
1024-code book often a different code, in every image.

`PatchDecoder` (`decoder_type: patch`) is its mirror: each code is decoded to its own f x f
patch by per-position MLP blocks and a pixel shuffle, with no context across positions. With the
patch encoder a code then stands for one patch exactly, which suits images of flat colours and
hard edges (shapes); it costs a small fraction of taming's decoder (the quick preset uses it).
"""

from __future__ import annotations

import torch
from torch import nn


def build_encoder(in_channels: int, z_channels: int, ch: int, ch_mult: list[int], num_res_blocks: int,
                  attn_resolutions: list[int], resolution: int, norm_groups: int = 32) -> nn.Module:
    from diffusers.models.autoencoders.vae import Encoder

    block_types, res = [], resolution
    for _ in ch_mult:
        block_types.append("AttnDownEncoderBlock2D" if res in attn_resolutions else "DownEncoderBlock2D")
        res //= 2
    return Encoder(in_channels=in_channels, out_channels=z_channels, down_block_types=tuple(block_types),
                   block_out_channels=tuple(ch * m for m in ch_mult), layers_per_block=num_res_blocks,
                   norm_num_groups=norm_groups, act_fn="silu", double_z=False, mid_block_add_attention=True)


def build_decoder(out_channels: int, z_channels: int, ch: int, ch_mult: list[int], num_res_blocks: int,
                  attn_resolutions: list[int], resolution: int, norm_groups: int = 32) -> nn.Module:
    from diffusers.models.autoencoders.vae import Decoder

    # diffusers lists up blocks from the lowest resolution upwards, taking channels reversed
    res = resolution // 2 ** (len(ch_mult) - 1)
    block_types = []
    for _ in ch_mult:
        block_types.append("AttnUpDecoderBlock2D" if res in attn_resolutions else "UpDecoderBlock2D")
        res *= 2
    return Decoder(in_channels=z_channels, out_channels=out_channels, up_block_types=tuple(block_types),
                   block_out_channels=tuple(ch * m for m in ch_mult), layers_per_block=num_res_blocks,
                   norm_num_groups=norm_groups, act_fn="silu", norm_type="group", mid_block_add_attention=True)


class PatchMLPBlock(nn.Module):
    """x + W2 silu(W1 silu(x)) at every position (1 x 1 convolutions): no mixing across positions."""

    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.SiLU(), nn.Conv2d(width, width, 1), nn.SiLU(), nn.Conv2d(width, width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


def build_patch_encoder(in_channels: int, z_channels: int, ch: int, ch_mult: list[int], num_res_blocks: int,
                        **_: object) -> nn.Module:
    """(B, in, H, W) -> (B, z, H / f, W / f), f = 2 ** (len(ch_mult) - 1), each output position a
    function of its own f x f patch only. Width ch * ch_mult[-1], num_res_blocks + 1 MLP blocks."""
    factor, width = 2 ** (len(ch_mult) - 1), ch * ch_mult[-1]
    return nn.Sequential(nn.Conv2d(in_channels, width, factor, stride=factor),
                         *[PatchMLPBlock(width) for _ in range(num_res_blocks + 1)],
                         nn.SiLU(), nn.Conv2d(width, z_channels, 1))


class PatchDecoder(nn.Module):
    """(B, z, h, w) -> (B, out, h * f, w * f), each f x f output patch a function of its own code
    only: a 1 x 1 convolution to `width`, `blocks` residual MLP blocks, then `out * f * f` channels
    rearranged into the patch (pixel shuffle)."""

    def __init__(self, out_channels: int, z_channels: int, width: int, factor: int, blocks: int):
        super().__init__()
        self.conv_in = nn.Conv2d(z_channels, width, 1)
        self.blocks = nn.Sequential(*[PatchMLPBlock(width) for _ in range(blocks)], nn.SiLU())
        self.conv_out = nn.Conv2d(width, out_channels * factor * factor, 1)  # where the GAN weight is measured
        self.shuffle = nn.PixelShuffle(factor)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv_out(self.blocks(self.conv_in(z))))


def build_patch_decoder(out_channels: int, z_channels: int, ch: int, ch_mult: list[int], num_res_blocks: int,
                        **_: object) -> nn.Module:
    """The mirror of `build_patch_encoder`: width ch * ch_mult[-1], num_res_blocks + 1 MLP blocks."""
    return PatchDecoder(out_channels, z_channels, ch * ch_mult[-1], 2 ** (len(ch_mult) - 1), num_res_blocks + 1)
