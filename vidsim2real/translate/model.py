"""The translator and its training step, written to be read beside the papers.

Symbols (Pfeiffer et al. 2019 / Rivoir et al. 2021, MUNIT notation):
  x_s  = sim RGB (+) neural features of a view      x_r = a real frame
  E_s^c, G_s: sim content encoder / decoder          E_r^c, E_r^s, G_r: real content, style enc., decoder
  s ~ N(0, I): a style code, fixed per video (one per item here, shared by both views)
  x_{s->r} = G_r(E_s^c(x_s), s)                      x_{r->s} = G_s(E_r^c(x_r))

``training_step(batch)`` updates the generators (and neural textures) with the discriminators
frozen, then the discriminators, and returns the named losses.
"""
from __future__ import annotations

import random
from contextlib import nullcontext

import torch
from torch import nn

from ..errors import UserError
from ..train.data import Batch, features_for
from .losses import (LossWeights, lsgan_d, lsgan_g, msssim_loss_brightness, view_consistency)
from .networks import (ContentEncoder, Decoder, MultiScaleDiscriminator, PatchDiscriminator, ResnetGenerator,
                       StyleEncoder, UNetGenerator, init_weights)


class Translator(nn.Module):
    """The networks of one model type ("munit", "cyclegan", "pix2pix").

    ``translate(sim, features, style)`` maps sim RGB [B, 3, H, W] (+ features [B, C, H, W]) in
    [-1, 1] to a realistic frame [B, 3, H, W] in [-1, 1].
    """

    def __init__(self, model_cfg, feat_channels: int, seed: int = 0):
        super().__init__()
        m = model_cfg
        self.kind = m.type
        self.feat_channels = feat_channels if (m.features and m.type == "munit") else 0
        self.style_dim = m.style_dim
        cs = 3 + self.feat_channels
        if m.type == "munit":
            self.enc_s = ContentEncoder(cs, m.dim, m.n_down, m.n_res)
            cdim = self.enc_s.out_dim
            self.dec_s = Decoder(cs, cdim, m.n_down, m.n_res, "in")
            self.enc_r = ContentEncoder(3, m.dim, m.n_down, m.n_res)
            self.sty_r = StyleEncoder(3, m.dim, 4, m.style_dim)
            self.dec_r = Decoder(3, cdim, m.n_down, m.n_res, "adain", m.style_dim, m.mlp_dim)
            self.dis_r = MultiScaleDiscriminator(3, m.dis_dim, m.dis_layers, m.dis_scales)
            self.dis_s = MultiScaleDiscriminator(cs, m.dis_dim, m.dis_layers, m.dis_scales)
        elif m.type == "cyclegan":
            self.g_s2r = ResnetGenerator(3, 3, m.dim, 9)
            self.g_r2s = ResnetGenerator(3, 3, m.dim, 9)
            self.dis_r = PatchDiscriminator(3, m.dis_dim)
            self.dis_s = PatchDiscriminator(3, m.dis_dim)
        elif m.type == "pix2pix":
            self.g_s2r = UNetGenerator(3, 3, m.dim, n_down=6)
            self.dis_r = PatchDiscriminator(6, m.dis_dim)       # conditional: sees (sim, real)
        else:
            raise ValueError(f"unknown model type {m.type!r}")
        init_weights(self, 0.02, torch.Generator().manual_seed(int(seed)))

    def discriminators(self) -> list[nn.Module]:
        return [getattr(self, n) for n in ("dis_r", "dis_s") if hasattr(self, n)]

    def generator_parameters(self) -> list[nn.Parameter]:
        dis = {id(p) for d in self.discriminators() for p in d.parameters()}
        return [p for p in self.parameters() if id(p) not in dis]

    def deploy_modules(self) -> list[str]:
        """The sub-networks a slim checkpoint keeps: the sim->real path, the style encoder and the
        real-domain discriminator (fit-textures trains textures against it)."""
        names = ["enc_s", "dec_r", "sty_r", "dis_r"] if self.kind == "munit" else ["g_s2r", "dis_r"]
        return [n for n in names if hasattr(self, n)]

    def deploy_state_dict(self) -> dict[str, torch.Tensor]:
        """state_dict() restricted to deploy_modules() (what translate and fit-textures need)."""
        keep = tuple(n + "." for n in self.deploy_modules())
        return {k: v.detach().cpu() for k, v in self.state_dict().items() if k.startswith(keep)}

    def load_weights(self, state: dict[str, torch.Tensor], source=None) -> None:
        """Load a full or a slim (deploy) state dict: only modules outside deploy_modules() may
        be absent. Any other mismatch is a UserError naming ``source`` (the checkpoint file)."""
        own = set(self.state_dict())
        keep = tuple(n + "." for n in self.deploy_modules())
        missing = [k for k in own - set(state) if k.startswith(keep)]
        unexpected = sorted(set(state) - own)
        try:
            if missing or unexpected:
                raise RuntimeError(f"missing {sorted(missing)[:3]}, unexpected {unexpected[:3]}")
            self.load_state_dict(state, strict=False)      # shape mismatches still raise
        except RuntimeError as exc:
            raise UserError(f"model weights do not match the architecture in its config: {str(exc)[:200]}",
                            file=source) from None

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return [p for d in self.discriminators() for p in d.parameters()]

    def sim_input(self, sim: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        if self.feat_channels:
            if features is None:
                raise ValueError("this model needs neural features")
            return torch.cat([sim, features.to(sim.dtype)], 1)
        return sim

    @torch.no_grad()
    def encode_style(self, real: torch.Tensor) -> torch.Tensor:
        """Style code [B, style_dim] of real frames [B, 3, H, W] in [-1, 1] (MUNIT only)."""
        if self.kind != "munit":
            return torch.zeros(real.shape[0], self.style_dim, device=real.device)
        return self.sty_r(real)

    def translate(self, sim: torch.Tensor, features: torch.Tensor | None = None,
                  style: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "munit":
            if style is None:
                style = torch.zeros(sim.shape[0], self.style_dim, device=sim.device)
            return self.dec_r(self.enc_s(self.sim_input(sim, features)), style.to(sim.dtype))
        return self.g_s2r(sim)


class ImagePool:
    """CycleGAN's history of generated images (Shrivastava et al. 2017), with its own RNG."""

    def __init__(self, size: int, seed: int):
        self.size = size
        self.images: list[torch.Tensor] = []
        self.rng = random.Random(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for img in images.detach():
            img = img[None]
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif self.rng.random() > 0.5:
                i = self.rng.randrange(self.size)
                out.append(self.images[i].clone())
                self.images[i] = img.clone()
            else:
                out.append(img)
        return torch.cat(out)

    def state(self) -> dict:
        return {"images": [t.cpu() for t in self.images], "rng": list(self.rng.getstate()[1]),
                "rng_version": self.rng.getstate()[0], "gauss": self.rng.getstate()[2]}

    def load_state(self, state: dict, device) -> None:
        self.images = [t.to(device) for t in state["images"]]
        self.rng.setstate((state["rng_version"], tuple(state["rng"]), state["gauss"]))


class GANTrainer(nn.Module):
    """Translator + neural textures (one TextureSet per anatomy) + optimizers; ``training_step``.

    ``reduce_grads(params)`` is called before every optimizer step (identity on one process,
    an all-reduce across ranks under torch.distributed).
    """

    def __init__(self, cfg, translator: Translator, textures: dict, device, reduce_grads=None,
                 freeze_networks: bool = False):
        super().__init__()
        self.cfg = cfg
        self.w: LossWeights = cfg.loss
        self.net = translator
        self.textures = nn.ModuleDict(textures)
        self.device = device
        self.reduce_grads = reduce_grads or (lambda params: None)
        self.freeze_networks = freeze_networks
        self.style_gen = torch.Generator(device="cpu").manual_seed(int(cfg.seed) + 17)
        o = cfg.optim
        tex_params = [p for t in self.textures.values() for p in t.parameters()] if translator.feat_channels else []
        groups = []
        if not freeze_networks:
            groups.append({"params": translator.generator_parameters(), "lr": o.lr})
        if tex_params:
            groups.append({"params": tex_params, "lr": o.lr * o.texture_lr_mult, "weight_decay": 0.0})
        self.opt_g = torch.optim.Adam(groups, lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)
        self.opt_d = torch.optim.Adam(translator.discriminator_parameters(), lr=o.lr, betas=(o.beta1, o.beta2),
                                      weight_decay=o.weight_decay)
        # fit-textures never steps the discriminators, so their schedule stays out
        opts = (self.opt_g,) if freeze_networks else (self.opt_g, self.opt_d)
        self.sched = [torch.optim.lr_scheduler.StepLR(opt, o.lr_step, o.lr_gamma) for opt in opts]
        self.pool_r = ImagePool(cfg.model.pool_size if translator.kind != "munit" else 0, cfg.seed + 1)
        self.pool_s = ImagePool(cfg.model.pool_size if translator.kind != "munit" else 0, cfg.seed + 2)
        self.step = 0
        if freeze_networks:
            for p in translator.parameters():
                p.requires_grad_(False)

    # -- helpers ---------------------------------------------------------------------------------
    def autocast(self):
        if self.device.type == "cuda" and self.cfg.amp == "bf16":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    @staticmethod
    def _set_requires_grad(modules, flag: bool) -> None:
        for m in modules:
            for p in m.parameters():
                p.requires_grad_(flag)

    def _opt_step(self, opt, loss) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in opt.param_groups for p in g["params"]]
        self.reduce_grads(params)
        if self.cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)
        opt.step()

    def random_style(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.net.style_dim, generator=self.style_gen).to(self.device)

    # -- the training step -------------------------------------------------------------------
    def training_step(self, batch: Batch) -> dict[str, float]:
        """One generator update (discriminators frozen), then one discriminator update.

        Returns the named losses (floats) of this step; ``total_g``/``total_d`` are the sums
        that were back-propagated. Raises FloatingPointError before any update when a loss is
        not finite, so the weights stay those of the last good step.
        """
        kind = self.net.kind
        if self.freeze_networks:
            step_fn = self._step_textures
        else:
            step_fn = {"munit": self._step_munit, "cyclegan": self._step_cyclegan, "pix2pix": self._step_pix2pix}[kind]
        out = step_fn(batch)
        self.step += 1
        for s in self.sched:
            s.step()
        return out

    def _check(self, losses: dict[str, torch.Tensor]) -> None:
        bad = [k for k, v in losses.items() if not torch.isfinite(v.detach()).all()]
        if bad:
            raise FloatingPointError(f"non-finite loss ({', '.join(bad)}) at step {self.step}")

    def _step_munit(self, b: Batch) -> dict[str, float]:
        w, net = self.w, self.net
        dis = net.discriminators()
        B = b.sim1.shape[0]
        # ---- generators (+ textures), discriminators frozen
        self._set_requires_grad(dis, False)
        with self.autocast():
            f1 = features_for(self.textures, b.buf1, b.scenes) if net.feat_channels else None
            f2 = features_for(self.textures, b.buf2, b.scenes) if net.feat_channels else None
            x_s1 = net.sim_input(b.sim1, f1)
            x_r = b.real
            s = self.random_style(B)                              # one style per item, both views
            c_s1 = net.enc_s(x_s1)
            c_r, s_r = net.enc_r(x_r), net.sty_r(x_r)
            x_s1_rec = net.dec_s(c_s1)                            # within-domain reconstructions
            x_r_rec = net.dec_r(c_r, s_r)
            x_sr = net.dec_r(c_s1, s)                             # x_{s->r}
            x_rs = net.dec_s(c_r)                                 # x_{r->s}
            c_sr, s_sr = net.enc_r(x_sr), net.sty_r(x_sr)         # re-encode the translations
            c_rs = net.enc_s(x_rs)
            x_srs = net.dec_s(c_sr)                               # cycles
            x_rsr = net.dec_r(c_rs, s_r)
            target_s = x_s1.detach()                              # textures learn from translation, not recon
            L = {
                "gan_g": w.gan * (lsgan_g(net.dis_r(x_sr)) + lsgan_g(net.dis_s(x_rs))),
                "recon_x": w.recon_x * ((x_s1_rec - target_s).abs().mean() + (x_r_rec - x_r).abs().mean()),
                "recon_c": w.recon_c * ((c_sr - c_s1.detach()).abs().mean() + (c_rs - c_r.detach()).abs().mean()),
                "recon_s": w.recon_s * (s_sr - s).abs().mean(),
                "cycle": w.cycle * ((x_srs - target_s).abs().mean() + (x_rsr - x_r).abs().mean()),
                "msssim_s2r": w.msssim_s2r * msssim_loss_brightness(x_sr, b.sim1),
                "msssim_r2s": w.msssim_r2s * msssim_loss_brightness(x_rs[:, :3], x_r),
            }
            if w.view > 0 and self.step >= w.view_warmup:
                x_s2 = net.sim_input(b.sim2, f2)
                x_sr2 = net.dec_r(net.enc_s(x_s2), s)
                L["view"] = w.view * view_consistency(x_sr, x_sr2, b.uv12, b.valid12)
            total_g = sum(L.values())
        L = {k: v.float() for k, v in L.items()}
        self._check({**L, "total_g": total_g.float()})
        self._opt_step(self.opt_g, total_g)
        # ---- discriminators
        self._set_requires_grad(dis, True)
        with self.autocast():
            d_loss = lsgan_d(net.dis_r(x_r), net.dis_r(x_sr.detach())) + lsgan_d(net.dis_s(x_s1.detach()),
                                                                               net.dis_s(x_rs.detach()))
            total_d = w.gan * d_loss
        self._check({"total_d": total_d.float()})
        self._opt_step(self.opt_d, total_d)
        self._last_images = {"sim": b.sim1.detach(), "features": None if f1 is None else f1.detach(),
                             "translated": x_sr.detach(), "real": x_r.detach()}
        return {**{k: float(v.detach()) for k, v in L.items()}, "total_g": float(total_g.detach()), "total_d": float(total_d.detach())}

    def _step_textures(self, b: Batch) -> dict[str, float]:
        """fit-textures: networks and discriminators frozen; only the neural textures learn, from
        the adversarial loss of the (frozen) real discriminator and the view-consistency loss."""
        w, net = self.w, self.net
        if not net.feat_channels:
            raise ValueError("this model has no neural textures to fit")
        with self.autocast():
            f1 = features_for(self.textures, b.buf1, b.scenes)
            f2 = features_for(self.textures, b.buf2, b.scenes)
            s = self.random_style(b.sim1.shape[0])
            x_sr = net.dec_r(net.enc_s(net.sim_input(b.sim1, f1)), s)
            L = {"gan_g": w.gan * lsgan_g(net.dis_r(x_sr))}
            if w.view > 0 and self.step >= w.view_warmup:
                x_sr2 = net.dec_r(net.enc_s(net.sim_input(b.sim2, f2)), s)
                L["view"] = w.view * view_consistency(x_sr, x_sr2, b.uv12, b.valid12)
            total = sum(L.values())
        L = {k: v.float() for k, v in L.items()}
        self._check({**L, "total_g": total.float()})
        self._opt_step(self.opt_g, total)
        self._last_images = {"sim": b.sim1.detach(), "features": f1.detach(), "translated": x_sr.detach(),
                             "real": b.real.detach()}
        return {**{k: float(v.detach()) for k, v in L.items()}, "total_g": float(total.detach())}

    def _step_cyclegan(self, b: Batch) -> dict[str, float]:
        w, net = self.w, self.net
        dis = net.discriminators()
        self._set_requires_grad(dis, False)
        with self.autocast():
            x_s, x_r = b.sim1, b.real
            fake_r, fake_s = net.g_s2r(x_s), net.g_r2s(x_r)
            rec_s, rec_r = net.g_r2s(fake_r), net.g_s2r(fake_s)
            L = {"gan_g": w.gan * (lsgan_g(net.dis_r(fake_r)) + lsgan_g(net.dis_s(fake_s))),
                 "cycle": w.cycle * ((rec_s - x_s).abs().mean() + (rec_r - x_r).abs().mean())}
            if w.identity > 0:
                L["identity"] = w.identity * w.cycle * ((net.g_s2r(x_r) - x_r).abs().mean()
                                                        + (net.g_r2s(x_s) - x_s).abs().mean())
            total_g = sum(L.values())
        self._check({**L, "total_g": total_g})
        self._opt_step(self.opt_g, total_g)
        self._set_requires_grad(dis, True)
        with self.autocast():
            total_d = 0.5 * w.gan * (lsgan_d(net.dis_r(x_r), net.dis_r(self.pool_r.query(fake_r)))
                                     + lsgan_d(net.dis_s(x_s), net.dis_s(self.pool_s.query(fake_s))))
        self._check({"total_d": total_d})
        self._opt_step(self.opt_d, total_d)
        self._last_images = {"sim": x_s.detach(), "features": None, "translated": fake_r.detach(), "real": x_r.detach()}
        return {**{k: float(v.detach()) for k, v in L.items()}, "total_g": float(total_g.detach()), "total_d": float(total_d.detach())}

    def _step_pix2pix(self, b: Batch) -> dict[str, float]:
        if b.paired is None:
            raise ValueError("pix2pix needs paired targets (batch.paired)")
        w, net = self.w, self.net
        dis = net.discriminators()
        self._set_requires_grad(dis, False)
        with self.autocast():
            x_s, y = b.sim1, b.paired
            fake = net.g_s2r(x_s)
            L = {"gan_g": w.gan * lsgan_g(net.dis_r(torch.cat([x_s, fake], 1))),
                 "l1": w.l1 * (fake - y).abs().mean()}
            total_g = sum(L.values())
        self._check({**L, "total_g": total_g})
        self._opt_step(self.opt_g, total_g)
        self._set_requires_grad(dis, True)
        with self.autocast():
            total_d = 0.5 * w.gan * lsgan_d(net.dis_r(torch.cat([x_s, y], 1)),
                                            net.dis_r(self.pool_r.query(torch.cat([x_s, fake], 1))))
        self._check({"total_d": total_d})
        self._opt_step(self.opt_d, total_d)
        self._last_images = {"sim": x_s.detach(), "features": None, "translated": fake.detach(), "real": y.detach()}
        return {**{k: float(v.detach()) for k, v in L.items()}, "total_g": float(total_g.detach()), "total_d": float(total_d.detach())}

    def last_images(self) -> dict:
        return getattr(self, "_last_images", {})
