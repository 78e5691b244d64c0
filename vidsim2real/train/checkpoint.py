"""The one checkpoint payload builder (training runs and fit-textures).

The file format (content digest, atomic write, safe loading) is ``io/checkpoint.py``; what
inference reads from a payload is documented in ``translate/inference.py``.
"""
from __future__ import annotations

import torch

from ..io.checkpoint import quantized


def slim_textures(textures: dict) -> dict:
    """Texture state dicts per anatomy with the texel pyramids stored as int8 with a scale per
    plane and channel (``io.checkpoint.quantized``; they load back as float32, within 0.8 % of
    each slice's largest texel), a quarter of float32 — what lets 0.5 mm detail layers fit a
    shipped checkpoint."""
    return {a: {k: (quantized(v) if ".levels." in k else v.detach().cpu()) for k, v in st.items()}
            for a, st in textures.items()}


def slim_weights(state: dict) -> dict:
    """Network weights as float16 (slim checkpoints; they load back into float32 parameters and
    inference runs in float32 or bf16 anyway), halving what a deploy carries."""
    return {k: v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu() for k, v in state.items()}


def build_payload(*, step: int, config: dict, model_state: dict, textures: dict, texture_meta: dict,
                  texture_config: dict, slim: bool, training_state: dict | None = None, **extra) -> dict:
    """A checkpoint payload.

    step: training step; config: the training config (dict); model_state: the translator's
    state dict (full, or ``deploy_state_dict()`` for slim); textures: anatomy -> TextureSet
    state dict; texture_meta: anatomy -> objects/classes it covers; texture_config: dict.
    slim: texels in int8, weights in float16 (what translate, export, metrics and fit-textures need).
    training_state (full checkpoints): optimizers, schedulers and RNG states for exact resume.
    extra: more top-level keys (e.g. ``fitted``).
    """
    textures = {a: {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in st.items()}
                for a, st in textures.items()}
    model = {k: v.detach().cpu() for k, v in model_state.items()}
    payload = {"step": int(step), "config": config, "model": slim_weights(model) if slim else model,
               "textures": slim_textures(textures) if slim else textures,
               "texture_meta": texture_meta, "texture_config": texture_config, **extra}
    if training_state is not None:
        payload.update(training_state)
    return payload


def trainer_payload(trainer, cfg, metas: dict, rng: list | None, slim: bool = False) -> dict:
    """The payload of a training run: slim (deploy networks in float16, int8 texels) or full (everything
    needed to resume exactly: optimizers, schedulers, every rank's RNG states)."""
    net = trainer.net
    state = None if slim else {"opt_g": trainer.opt_g.state_dict(), "opt_d": trainer.opt_d.state_dict(),
                               "sched": [s.state_dict() for s in trainer.sched], "rng": rng}
    return build_payload(step=trainer.step, config=cfg.to_dict(),
                         model_state=net.deploy_state_dict() if slim else net.state_dict(),
                         textures={a: t.state_dict() for a, t in trainer.textures.items()}, texture_meta=metas,
                         texture_config=cfg.texture.to_dict(), slim=slim, training_state=state)
