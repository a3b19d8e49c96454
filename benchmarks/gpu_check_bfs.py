"""BFS at full size on a GPU, without weights: does the dual-branch FLUX Fill transformer fit and how fast is it?

A FLUX.1-Fill-dev-shaped ``FluxTransformer2DModel`` (19 dual + 38 single blocks, 3072 wide,
384 input channels, guidance embedding) is built with random weights directly on the device
in bf16, with the BFS joint adapter attached (``share_base=True``, rank 4, as the official
release). Text embeddings and latents are random tensors of the real shapes (T5: 512 tokens x
4096, CLIP pooled 768; 16 latent channels at f=8), so no VAE or text encoder is needed. It
measures, in one process:

1. sampling: ``--steps`` flow-matching Euler steps (FLUX's shifted sigmas) of the
   ``[composite; foreground]`` pair at ``--size``, with the joint adapter and, as the baseline,
   the same transformer stock (adapter off, same batch): seconds per step and peak memory;
2. one training step: base frozen, gradient checkpointing, flow-matching MSE on both
   branches with a shared logit-normal sigma, AdamW on the adapter (LoRAs + ``post``): seconds
   and peak memory.

    python benchmarks/gpu_check_bfs.py                      # on a GPU (bf16, 512 px, 50 steps)
    python benchmarks/gpu_check_bfs.py --tiny --steps 2     # CPU rehearsal of the same code, tiny sizes
    python benchmarks/gpu_check_bfs.py --device meta --steps 1   # full size, shapes only, any machine

Writes the table to stdout and ``--json`` (default ``$OUT/gpu_check_bfs.json`` when ``OUT`` is set).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lamina.bfs import components as comp  # noqa: E402
from lamina.bfs.joint import BFSJointAdapter  # noqa: E402
from lamina.bfs.pipeline import calculate_shift, flux_sigmas, latent_image_ids, predict_velocity  # noqa: E402

#: Learning rate of the rehearsal's training step (its value does not affect time or memory).
LEARNING_RATE = 1e-4


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def build(config: comp.BFSComponentsConfig, device: torch.device, dtype: torch.dtype, seed: int):
    """Random full-shape transformer + attached joint adapter, created on ``device`` in ``dtype``."""
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            transformer = comp.build_transformer(config)
            joint = BFSJointAdapter.for_transformer(transformer, rank=config.joint_rank,
                                                    lora_alpha=config.joint_alpha, share_base=config.joint_share_base,
                                                    single_tokens=config.joint_single_tokens)
    finally:
        torch.set_default_dtype(previous)
    transformer.requires_grad_(False).eval()
    with torch.no_grad():  # a trained adapter: post and LoRA up-projections are not zero
        for block in joint.blocks.values():
            block.post.weight.normal_(0, 1e-3)
            for branch in block.lora.values():
                for lora in branch.values():
                    lora.up.weight.normal_(0, 1e-3)
    joint.attach(transformer)
    return transformer, joint


def inputs(config: comp.BFSComponentsConfig, size: int, device: torch.device, dtype: torch.dtype, seed: int):
    """Random latents / condition / text of the real shapes for one ``[composite; foreground]`` pair."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    grid = size // config.vae_scale_factor
    tokens = (grid // 2) ** 2
    channels = 4 * config.latent_channels
    cond_channels = config.fill_in_channels - channels

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    return dict(
        latents_x=rand(1, tokens, channels), latents_y=rand(1, tokens, channels),
        condition=rand(1, tokens, cond_channels), prompt_embeds=rand(1, config.max_sequence_length,
                                                                     config.joint_attention_dim),
        pooled=rand(1, config.pooled_projection_dim),
        text_ids=torch.zeros(config.max_sequence_length, 3, device=device, dtype=dtype),
        img_ids=latent_image_ids(grid, grid, device=device, dtype=dtype),
    )


@torch.no_grad()
def sample(transformer, joint, data, config, steps: int, guidance: float | None, device: torch.device) -> float:
    """Seconds per Euler step of a ``steps``-step run (FLUX's shifted sigmas); ``joint=None``: stock, uncoupled."""
    scheduler = comp.build_scheduler(config)
    tokens = data["latents_x"].shape[1]
    sched = scheduler.config
    mu = calculate_shift(tokens, sched.base_image_seq_len, sched.max_image_seq_len, sched.base_shift, sched.max_shift)
    # On the meta device (a shape-only dry run) the schedule stays on the CPU: its values are read as floats.
    scheduler.set_timesteps(sigmas=flux_sigmas(steps), device="cpu" if device.type == "meta" else device, mu=mu)
    latents = torch.cat([data["latents_x"], data["latents_y"]])
    rest = {k: v for k, v in data.items() if k not in ("latents_x", "latents_y")}
    _sync(device)
    start = time.perf_counter()
    for t in scheduler.timesteps:
        sigma = float(t) / sched.num_train_timesteps
        out = predict_velocity(transformer, joint, latents[:1], latents[1:], timestep=sigma, guidance=guidance, **rest)
        latents = scheduler.step(torch.cat([out.velocity_x, out.velocity_y]), t, latents, return_dict=False)[0]
    _sync(device)
    elapsed = (time.perf_counter() - start) / steps
    if latents.shape != (2, *data["latents_x"].shape[1:]):
        raise RuntimeError(f"sampling returned latents of shape {tuple(latents.shape)}")
    if device.type != "meta" and not torch.isfinite(latents).all():
        raise RuntimeError("sampling produced non-finite latents")
    return elapsed


def train_step(transformer, joint, data, guidance: float | None, device: torch.device,
               seed: int) -> tuple[float, float]:
    """One checkpointed training step of the adapter (base frozen): (seconds, loss)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    transformer.enable_gradient_checkpointing()
    transformer.train()
    joint.train()
    optimizer = torch.optim.AdamW(joint.trainable_parameters(), lr=LEARNING_RATE)
    clean_x, clean_y = data["latents_x"], data["latents_y"]
    rest = {k: v for k, v in data.items() if k not in ("latents_x", "latents_y")}
    sigma = torch.sigmoid(torch.randn(1, generator=g)).item()  # logit-normal, shared by both branches
    noise_x = torch.randn(clean_x.shape, generator=g).to(clean_x)
    noise_y = torch.randn(clean_y.shape, generator=g).to(clean_y)
    _sync(device)
    start = time.perf_counter()
    noisy_x = (1 - sigma) * clean_x + sigma * noise_x
    noisy_y = (1 - sigma) * clean_y + sigma * noise_y
    out = predict_velocity(transformer, joint, noisy_x, noisy_y, timestep=sigma, guidance=guidance, **rest)
    loss = ((out.velocity_x.float() - (noise_x - clean_x).float()) ** 2).mean()
    loss = loss + ((out.velocity_y.float() - (noise_y - clean_y).float()) ** 2).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    _sync(device)
    elapsed = time.perf_counter() - start
    leaked = [n for n, p in transformer.named_parameters() if p.grad is not None]
    if leaked:
        raise RuntimeError(f"gradients reached the frozen base: {leaked[:3]}")
    if device.type == "meta":  # shapes only: the step ran, there is no loss value
        transformer.disable_gradient_checkpointing()
        transformer.eval()
        return elapsed, float("nan")
    transformer.disable_gradient_checkpointing()
    transformer.eval()
    return elapsed, loss.item()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU rehearsal: tiny sizes, float32")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (512; tiny: 64)")
    parser.add_argument("--steps", type=int, default=50, help="sampling steps (official BFS: 50)")
    parser.add_argument("--device", default=None,
                        help="cuda (default) or cpu (--tiny); meta: a shape-only dry run of the full-size model "
                             "on any machine (no memory, no numbers, times meaningless)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="where to write the results (default $OUT/gpu_check_bfs.json)")
    args = parser.parse_args(argv)

    if args.tiny:
        config = dataclasses.replace(comp.get_preset("tiny"), guidance_embeds=True, joint_share_base=True,
                                     joint_rank=4, joint_alpha=4.0)
        device, dtype, size = torch.device(args.device or "cpu"), torch.float32, args.size or config.resolution
    else:
        config = comp.get_preset("flux-fill")
        device, dtype, size = torch.device(args.device or "cuda"), torch.bfloat16, args.size or 512
    if size % config.packing_multiple:
        parser.error(f"--size must be a multiple of {config.packing_multiple}")
    guidance = config.guidance_scale if config.guidance_embeds else None

    _reset_peak(device)
    start = time.perf_counter()
    transformer, joint = build(config, device, dtype, args.seed)
    _sync(device)
    build_s = time.perf_counter() - start
    params = {"transformer": comp.count_parameters(transformer), "joint": comp.count_parameters(joint)}
    weights_gib = _peak_gib(device)
    data = inputs(config, size, device, dtype, args.seed)

    rows = {}
    _reset_peak(device)
    rows["sampling, stock (adapter off)"] = (sample(transformer, None, data, config, args.steps, guidance, device),
                                             _peak_gib(device))
    _reset_peak(device)
    rows["sampling, BFS joint"] = (sample(transformer, joint, data, config, args.steps, guidance, device),
                                   _peak_gib(device))
    _reset_peak(device)
    seconds, loss = train_step(transformer, joint, data, guidance, device, args.seed)
    rows["training step (ckpt, base frozen)"] = (seconds, _peak_gib(device))

    name = {"cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else "",
            "meta": "meta (shapes only: seconds and memory mean nothing)"}.get(device.type, device.type)
    print(f"BFS GPU check: {config.name} transformer, {size}x{size} px, batch = 1 pair (2 rows), {dtype}, {name}")
    print(f"parameters: transformer {params['transformer'] / 1e9:.3f} B, joint {params['joint'] / 1e6:.1f} M; "
          f"build {build_s:.1f} s; weights {weights_gib:.2f} GiB")
    print("| run | seconds (per step for sampling) | peak memory GiB |")
    print("|---|---|---|")
    for key, (sec, mem) in rows.items():
        print(f"| {key} | {sec:.3f} | {mem:.2f} |")
    print(f"sampling run of {args.steps} steps with the joint: {rows['sampling, BFS joint'][0] * args.steps:.1f} s; "
          f"training loss {loss:.4f}")
    result = {"config": config.name, "size": size, "steps": args.steps, "dtype": str(dtype), "device": name,
              "parameters": params, "build_s": build_s, "weights_gib": weights_gib, "loss": loss,
              "rows": {k: {"seconds": s, "peak_gib": m} for k, (s, m) in rows.items()}}
    target = args.json or (os.path.join(os.environ["OUT"], "gpu_check_bfs.json") if os.environ.get("OUT") else None)
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
