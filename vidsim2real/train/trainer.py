"""The training steps, written to be read beside the papers (one class per method).

``training_step(batch)`` updates the generators (and neural textures) with the
discriminators frozen, then the discriminators, and returns the named losses. Symbols follow
``translate/model.py`` (MUNIT notation of Pfeiffer et al. 2019 / Rivoir et al. 2021).
"""
from __future__ import annotations

import abc
import dataclasses
import random
from contextlib import nullcontext

import torch
from torch import nn

from ..texture import sample_features
from ..translate.model import (CycleGANTranslator, DCGANTranslator, MunitTranslator, OneWayTranslator,
                               Pix2PixTranslator, Translator)
from .data import Batch, gather_items
from .losses import LossWeights, detail_swd, lsgan_d, lsgan_g, msssim_loss_brightness, view_consistency


class ImagePool:
    """CycleGAN's history of generated images (Shrivastava et al. 2017), with its own RNG."""

    def __init__(self, size: int, seed: int):
        self.size = size
        self.images: list[torch.Tensor] = []
        self.rng = random.Random(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, C, H, W] -> [B, C, H, W]: each image, or (p = 0.5) a stored one it replaces."""
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


class GANTrainer(nn.Module, abc.ABC):
    """Translator + neural textures (one TextureSet per anatomy) + optimizers. Subclasses
    implement ``_step(batch)`` for one method.

    ``reduce_grads(params)`` is called before every optimizer step (identity on one process,
    an all-reduce across ranks under torch.distributed).
    """

    trains_networks = True

    def __init__(self, cfg, translator: Translator, textures: dict, device, reduce_grads=None):
        super().__init__()
        self.cfg = cfg
        self.w: LossWeights = cfg.loss
        self.net = translator
        self.textures = nn.ModuleDict(textures)
        self.device = device
        self.reduce_grads = reduce_grads or (lambda params: None)
        self.style_gen = torch.Generator(device="cpu").manual_seed(int(cfg.seed) + 17)
        o = cfg.optim
        tex_params = [p for t in self.textures.values() for p in t.parameters()] if translator.uses_features else []
        groups = []
        if self.trains_networks:
            groups.append({"params": translator.generator_parameters(), "lr": o.lr})
        if tex_params:
            groups.append({"params": tex_params, "lr": o.lr * o.texture_lr_mult, "weight_decay": 0.0})
        # fused Adam: one kernel per step instead of ~10 per parameter tensor (CPU and CUDA)
        self.opt_g = torch.optim.Adam(groups, lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay,
                                      fused=True)
        self.opt_d = torch.optim.Adam(translator.discriminator_parameters(), lr=o.lr, betas=(o.beta1, o.beta2),
                                      weight_decay=o.weight_decay, fused=True)
        # fit-textures never steps the discriminators, so their schedule stays out
        opts = (self.opt_g, self.opt_d) if self.trains_networks else (self.opt_g,)
        self.sched = [torch.optim.lr_scheduler.StepLR(opt, o.lr_step, o.lr_gamma) for opt in opts]
        pool = cfg.model.pool_size if translator.pools_fakes else 0
        self.pool_r = ImagePool(pool, cfg.seed + 1)
        self.pool_s = ImagePool(pool, cfg.seed + 2)
        self.step = 0
        self._last_images: dict = {}
        # on a GPU, convolutions run in NHWC (cuDNN's fast layout for bf16): no layout conversions
        self.channels_last = device.type == "cuda"
        if self.channels_last:
            translator.to(memory_format=torch.channels_last)

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

    def _check(self, losses: dict[str, torch.Tensor]) -> None:
        """FloatingPointError before any update when a loss is not finite (one host sync)."""
        values = torch.stack([v.detach().float().reshape(()) for v in losses.values()])
        if not bool(torch.isfinite(values).all()):
            bad = [k for k, v in zip(losses, values.tolist()) if not torch.isfinite(torch.tensor(v))]
            raise FloatingPointError(f"non-finite loss ({', '.join(bad)}) at step {self.step}")

    def random_style(self, n: int) -> torch.Tensor:
        """s ~ N(0, I): [n, style_dim] from the trainer's own (resumable) generator."""
        return torch.randn(n, self.net.style_dim, generator=self.style_gen).to(self.device)

    def videos(self, x: torch.Tensor) -> torch.Tensor | None:
        """A video per item of a batch x [B, ...]: [B] int64, random rows of the camera's black
        level and colour cast tables (from the style generator: resumable), so the discriminator
        sees the real footage's spread of them; None without a table (no draw: older runs unchanged)."""
        camera = self.net.camera
        if camera is None or not camera.has_rows:
            return None
        from ..translate.networks import BLACK_ROWS
        return torch.randint(BLACK_ROWS, (x.shape[0],), generator=self.style_gen)

    def features(self, views: list) -> torch.Tensor | None:
        """Neural features [B, C, H, W] of a batch's views (``Batch.views1``/``views2``), None
        when the model uses none."""
        return sample_features(self.textures, views) if self.net.uses_features else None

    def edges(self, views: list) -> torch.Tensor | None:
        """Geometric edges [B, H, W] of a batch's views (``render.FrameBuffers.edges``) when the
        model's camera blurs them, else None (nothing computed)."""
        cam = getattr(self.net, "camera", None)
        if cam is None or not cam.blurs_edges or not views:
            return None
        return gather_items(views, "edges", sum(len(g.items) for g in views))

    def detail_loss(self, fake: torch.Tensor, b: Batch) -> torch.Tensor:
        """loss.detail x ``losses.detail_swd`` of translations ``fake`` [B, 3, H, W] (class map:
        ``b.labels1``) against the batch's labelled real crops; random directions from the
        trainer's resumable generator."""
        return self.w.detail * detail_swd(fake.float(), b.labels1, b.detail_real.float(), b.detail_labels,
                                          generator=self.style_gen)

    @staticmethod
    def _floats(L: dict, **totals) -> dict[str, float]:
        """The named losses as floats (one host sync for all)."""
        named = {**L, **totals}
        values = torch.stack([v.detach().float().reshape(()) for v in named.values()]).tolist()
        return dict(zip(named, values))

    # -- the step ------------------------------------------------------------------------------
    def training_step(self, batch: Batch) -> dict[str, float]:
        """One generator update (discriminators frozen), then one discriminator update.

        Returns the named losses (floats) of this step; ``total_g``/``total_d`` are the sums
        that were back-propagated. Raises FloatingPointError before any update when a loss is
        not finite, so the weights stay those of the last good step.
        """
        if self.channels_last:
            batch = dataclasses.replace(batch, **{k: getattr(batch, k).contiguous(memory_format=torch.channels_last)
                                                 for k in ("sim1", "sim2", "real", "light1", "light2", "paired")
                                                 if getattr(batch, k) is not None})
        out = self._step(batch)
        self.step += 1
        for s in self.sched:
            s.step()
        return out

    @abc.abstractmethod
    def _step(self, b: Batch) -> dict[str, float]:
        """The method's generator + discriminator updates; returns the named losses."""

    def last_images(self) -> dict:
        """sim / features / translated / real of the last step (for TensorBoard grids)."""
        return self._last_images


class MunitTrainer(GANTrainer):
    """MUNIT with neural textures (Rivoir et al. 2021), or without them (per-frame baseline)."""

    def _step(self, b: Batch) -> dict[str, float]:
        w, net = self.w, self.net
        dis = net.discriminators()
        B = b.sim1.shape[0]
        # ---- generators (+ textures), discriminators frozen
        self._set_requires_grad(dis, False)
        with self.autocast():
            f1 = self.features(b.views1)
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
                with torch.no_grad():          # view 2 is the (detached) target of the view loss
                    x_sr2 = net.dec_r(net.enc_s(net.sim_input(b.sim2, self.features(b.views2))), s)
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
        return self._floats(L, total_g=total_g, total_d=total_d)


class OneWayTrainer(GANTrainer):
    """One-sided sim->real (translate.model.OneWayTranslator): the generator (and textures)
    learn from the real-domain discriminator, the brightness-structure loss against the sim
    render, style reconstruction and view consistency; then the discriminator steps on real
    frames vs translations (with sensor noise when the model has a camera model).

    Surface detail (optional): ``loss.detail`` adds the class-by-class sliced Wasserstein loss
    on high-passed L*a*b* patches against ``Batch.detail_real``; ``model.dis_detail`` adds a
    discriminator on the high-pass band (class-conditional with ``model.dis_classes``)."""

    def _step(self, b: Batch) -> dict[str, float]:
        w, net = self.w, self.net
        dis = net.discriminators()
        dis_d = getattr(net, "dis_d", None)
        B = b.sim1.shape[0]
        self._set_requires_grad(dis, False)
        with self.autocast():
            f1 = self.features(b.views1)
            s = self.random_style(B)                                   # one style per item, both views
            x_sr = net.translate(b.sim1, f1, s, b.light1, self.edges(b.views1))      # x_{s->r}, noise-free
            x_fake = net.add_noise(x_sr, torch.randn_like(x_sr), self.videos(x_sr)) if net.camera is not None else x_sr
            x_fake = net.graded(x_fake, b.labels1)
            L = {"gan_g": w.gan * lsgan_g(net.dis_r(x_fake)),
                 "msssim_s2r": w.msssim_s2r * msssim_loss_brightness(x_sr, b.sim1),
                 "recon_s": w.recon_s * (net.sty_r(x_sr) - s).abs().mean()}
            if dis_d is not None:
                L["gan_detail"] = w.gan * lsgan_g(dis_d(x_fake, b.labels1))
            if w.detail > 0:
                L["detail"] = self.detail_loss(x_fake, b)
            if w.view > 0 and self.step >= w.view_warmup:
                with torch.no_grad():          # view 2 is the (detached) target of the view loss
                    x_sr2 = net.translate(b.sim2, self.features(b.views2), s, b.light2, self.edges(b.views2))
                L["view"] = w.view * view_consistency(x_sr, x_sr2, b.uv12, b.valid12)
            total_g = sum(L.values())
        L = {k: v.float() for k, v in L.items()}
        self._check({**L, "total_g": total_g.float()})
        self._opt_step(self.opt_g, total_g)
        self._set_requires_grad(dis, True)
        with self.autocast():
            total_d = w.gan * lsgan_d(net.dis_r(b.real), net.dis_r(x_fake.detach()))
            if dis_d is not None:
                total_d = total_d + w.gan * lsgan_d(dis_d(b.real, b.real_labels), dis_d(x_fake.detach(), b.labels1))
        self._check({"total_d": total_d.float()})
        self._opt_step(self.opt_d, total_d)
        self._last_images = {"sim": b.sim1.detach(), "features": None if f1 is None else f1.detach(),
                             "translated": x_fake.detach(), "real": b.real.detach()}
        return self._floats(L, total_g=total_g, total_d=total_d)


class CycleGANTrainer(GANTrainer):
    """CycleGAN: adversarial + cycle (+ identity) losses; discriminators on a pool of fakes."""

    def _step(self, b: Batch) -> dict[str, float]:
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
        return self._floats(L, total_g=total_g, total_d=total_d)


class Pix2PixTrainer(GANTrainer):
    """pix2pix: conditional adversarial + L1 to the paired target (batch.paired)."""

    def _step(self, b: Batch) -> dict[str, float]:
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
        return self._floats(L, total_g=total_g, total_d=total_d)


class DCGANTrainer(GANTrainer):
    """DCGAN (Radford et al. 2016): the non-saturating GAN loss (binary cross-entropy on
    logits), generator from noise, discriminator on real frames vs samples."""

    def _step(self, b: Batch) -> dict[str, float]:
        net = self.net
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        x_r = b.real
        self._set_requires_grad([net.dis_r], False)
        with self.autocast():
            fake = net.gen(self.random_style(x_r.shape[0]))
            logit = net.dis_r(fake)[0]
            L = {"gan_g": self.w.gan * bce(logit, torch.ones_like(logit))}
            total_g = sum(L.values())
        self._check({**L, "total_g": total_g})
        self._opt_step(self.opt_g, total_g)
        self._set_requires_grad([net.dis_r], True)
        with self.autocast():
            lr, lf = net.dis_r(x_r)[0], net.dis_r(fake.detach())[0]
            total_d = self.w.gan * (bce(lr, torch.ones_like(lr)) + bce(lf, torch.zeros_like(lf)))
        self._check({"total_d": total_d})
        self._opt_step(self.opt_d, total_d)
        self._last_images = {"sim": fake.detach(), "features": None, "translated": fake.detach(), "real": x_r.detach()}
        return self._floats(L, total_g=total_g, total_d=total_d)


class TextureFitter(GANTrainer):
    """fit-textures: networks and discriminators frozen; only the neural textures learn, from
    the adversarial loss of the (frozen) real discriminator, the detail loss (when the run had
    one) and the view-consistency loss."""

    trains_networks = False

    def __init__(self, cfg, translator: Translator, textures: dict, device, reduce_grads=None):
        if not translator.uses_features:
            raise ValueError("this model has no neural textures to fit")
        super().__init__(cfg, translator, textures, device, reduce_grads)
        for p in translator.parameters():
            p.requires_grad_(False)
        # albedo channels keep the class colour they start from (the real frames' class albedo or
        # the adopted texture's): a discriminator frozen on another anatomy paints stripes into them
        for tset in textures.values():
            if tset.config.albedo:
                for t in tset.textures.values():
                    for lvl in t.levels:
                        if lvl.requires_grad:
                            lvl.register_hook(_without_albedo)

    def _step(self, b: Batch) -> dict[str, float]:
        w, net = self.w, self.net
        with self.autocast():
            f1 = self.features(b.views1)
            s = self.random_style(b.sim1.shape[0])
            x_sr = net.translate(b.sim1, f1, s, b.light1, self.edges(b.views1))
            x_fake = net.add_noise(x_sr, torch.randn_like(x_sr), self.videos(x_sr)) if net.camera is not None else x_sr
            x_fake = net.graded(x_fake, b.labels1)
            L = {"gan_g": w.gan * lsgan_g(net.dis_r(x_fake))}
            if w.detail > 0:              # the run's detail loss fits the new anatomy's detail too
                L["detail"] = self.detail_loss(x_fake, b)
            if w.view > 0 and self.step >= w.view_warmup:
                with torch.no_grad():          # view 2 is the (detached) target of the view loss
                    x_sr2 = net.translate(b.sim2, self.features(b.views2), s, b.light2, self.edges(b.views2))
                L["view"] = w.view * view_consistency(x_sr, x_sr2, b.uv12, b.valid12)
            total = sum(L.values())
        L = {k: v.float() for k, v in L.items()}
        self._check({**L, "total_g": total.float()})
        self._opt_step(self.opt_g, total)
        self._last_images = {"sim": b.sim1.detach(), "features": f1.detach(), "translated": x_sr.detach(),
                             "real": b.real.detach()}
        return self._floats(L, total_g=total)


def _without_albedo(grad: torch.Tensor) -> torch.Tensor:
    """A texel gradient [P, C, H, W] with its albedo channels (0-2) zeroed."""
    g = grad.clone()
    g[:, :3] = 0
    return g


TRAINERS: dict[type[Translator], type[GANTrainer]] = {
    MunitTranslator: MunitTrainer, CycleGANTranslator: CycleGANTrainer, Pix2PixTranslator: Pix2PixTrainer,
    OneWayTranslator: OneWayTrainer, DCGANTranslator: DCGANTrainer}


def make_trainer(cfg, translator: Translator, textures: dict, device, reduce_grads=None,
                 fit_textures: bool = False) -> GANTrainer:
    """The trainer of ``translator``'s method (``fit_textures``: the texture-only fitter)."""
    cls = TextureFitter if fit_textures else TRAINERS[type(translator)]
    return cls(cfg, translator, textures, device, reduce_grads)
