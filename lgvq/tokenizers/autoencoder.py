"""taming-transformers' convolutional encoder and decoder, built from diffusers' blocks.

Channels `ch * ch_mult[i]` per level, `num_res_blocks` residual blocks per level (the decoder
has one more, as in taming), attention blocks at the resolutions listed in `attn_resolutions`,
a mid block with attention, and a downsampling factor of 2 ** (len(ch_mult) - 1).
"""

from __future__ import annotations

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
