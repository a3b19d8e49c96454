"""The pure-PyTorch built-in FBDD (UNet forward, DDIM step, HFA, sampler) against diffusers; decompose without it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
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


def _scene(h: int = 96, w: int = 128) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    image = np.stack([0.3 + 0.4 * xx, 0.5 + 0.2 * yy, 0.6 - 0.3 * xx * yy], -1) + 0.05 * rng.random((h, w, 3))
    image[30:60, 40:80] = [0.8, 0.2, 0.1]
    image[60:66, 44:84] *= 0.5  # a shadow under the object
    alpha = np.zeros((h, w), np.float32)
    alpha[30:60, 40:80] = 1.0
    alpha[29, 40:80] = alpha[60, 40:80] = 0.5
    return image.clip(0, 1).astype(np.float32), alpha


def test_lite_hfa_matches_hfanet_on_the_builtin_model():
    from lamina.layeringdiff.hfa import HFANet, LiteHFA

    stock = HFANet.from_pretrained(BUILTIN / "hfa").eval()
    lite = LiteHFA.from_folder(BUILTIN / "hfa")
    assert lite.radius == stock.radius and lite.applies(4.0) and not lite.applies(4.5)
    g = torch.Generator().manual_seed(1)
    args = [torch.rand(2, c, 40, 48, generator=g) for c in (3, 1, 1, 3, 3)]
    with torch.no_grad():
        expected, got = stock(*args), lite(*args)
    torch.testing.assert_close(got.foreground, expected.foreground, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.background, expected.background, rtol=0, atol=1e-6)
    assert (got.background - args[4]).abs().max() > 1e-3  # the trained HFA does change the layers


@pytest.mark.parametrize("mirror", [True, False])
def test_lite_builtin_decomposer_matches_the_diffusers_pipeline(mirror):
    from lamina.layeringdiff.fbdd import FBDDDecomposer, LiteFBDD, load_builtin, load_builtin_lite

    image, alpha = _scene()
    lite = FBDDDecomposer.load(load_builtin_lite(), mirror=mirror)
    stock = FBDDDecomposer.load(load_builtin(), mirror=mirror)
    assert isinstance(lite.pipeline, LiteFBDD) and not isinstance(stock.pipeline, LiteFBDD)
    a, b = lite.decompose(image, alpha), stock.decompose(image, alpha)
    assert a.foreground.shape == (96, 128, 4) and a.background.shape == (96, 128, 3)
    assert np.abs(a.foreground - b.foreground).max() < 1e-4
    assert np.abs(a.background - b.background).max() < 1e-4
    assert np.abs(a.background - image).max() > 0.05  # the object was taken out of the background
    # the same with the HFA applied (a window within its trained scale) and 2 steps: pipeline level
    generator = [torch.Generator().manual_seed(0)]
    x = lite.pipeline(image[16:80, 28:92], alpha[16:80, 28:92], num_inference_steps=2, generator=generator,
                      mirror=mirror)
    y = stock.pipeline(image[16:80, 28:92], alpha[16:80, 28:92], num_inference_steps=2,
                       generator=[torch.Generator().manual_seed(0)], mirror=mirror)
    for name in ("foreground", "background", "effects"):
        assert np.abs(getattr(x, name) - getattr(y, name)).max() < 1e-4, name


def test_lite_refuses_what_it_does_not_support(tmp_path):
    from lamina.errors import LaminaError
    from lamina.layeringdiff.fbdd import LiteFBDD

    (tmp_path / "model_index.json").write_text('{"_class_name": "LatentFBDDPipeline"}')
    with pytest.raises(LaminaError, match="not a pixel-space FBDD"):
        LiteFBDD.from_folder(tmp_path)
    with pytest.raises(LaminaError, match="LiteUNet supports"):
        LiteUNet({**LiteUNet.from_folder(BUILTIN / "unet").config, "act_fn": "gelu"})


def test_decompose_with_the_builtin_model_imports_neither_diffusers_nor_transformers(tmp_path):
    # Nor pymatting and numba (about 2 s of imports): the matting is lamina.layeringdiff.matting.
    from PIL import Image

    image, _ = _scene()
    Image.fromarray((image * 255).astype(np.uint8)).save(tmp_path / "photo.png")
    code = ("import sys\nfrom lamina.cli import main\n"
            "main(['decompose', 'photo.png', '--box', '40,30,80,60', '--out', 'out.psd', '--threads', '1'],"
            " standalone_mode=False)\n"
            "print(sorted(m for m in ('diffusers', 'transformers', 'torch._dynamo', 'pymatting', 'numba')"
            " if m in sys.modules))\n")
    src = str(Path(__file__).resolve().parents[1] / "src")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={"PYTHONPATH": src, "LAMINA_PROGRESS": "0", "HF_HUB_OFFLINE": "1",
                              "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "out.psd").stat().st_size > 0
