"""The pure-PyTorch FBDD UNet forward and DDIM step against diffusers on the built-in model (work in progress)."""

from __future__ import annotations

from pathlib import Path

import torch

from lamina.layeringdiff.unet_lite import LiteDDIM, LiteUNet

BUILTIN = Path(__file__).resolve().parent.parent / "src/lamina/layeringdiff/assets/builtin"


def test_lite_unet_matches_diffusers_on_the_builtin_model():
    from diffusers import UNet2DModel

    stock = UNet2DModel.from_pretrained(BUILTIN / "unet").eval()
    lite = LiteUNet.from_folder(BUILTIN / "unet")
    x = torch.randn(2, stock.config.in_channels, 64, 64, generator=torch.Generator().manual_seed(0))
    for t in (999, 500, 3):
        with torch.no_grad():
            expected = stock(x, t).sample
        torch.testing.assert_close(lite(x, t), expected, rtol=1e-4, atol=1e-5)


def test_lite_ddim_matches_diffusers_on_the_builtin_scheduler():
    from diffusers import DDIMScheduler

    stock = DDIMScheduler.from_pretrained(BUILTIN / "scheduler")
    lite = LiteDDIM.from_folder(BUILTIN / "scheduler")
    torch.testing.assert_close(lite.alphas_cumprod, stock.alphas_cumprod, rtol=0, atol=0)
    for steps in (1, 4, 7):
        stock.set_timesteps(steps)
        lite.set_timesteps(steps)
        assert torch.equal(lite.timesteps, stock.timesteps)
        g = torch.Generator().manual_seed(steps)
        x = torch.randn(1, 7, 8, 8, generator=g)
        for t in stock.timesteps:
            out = torch.randn(1, 7, 8, 8, generator=g) * 1.5
            expected = stock.step(out, t, x).prev_sample
            got = lite.step(out, t, x)
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
            x = expected
