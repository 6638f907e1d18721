"""The validation loss: every term of the objective on held-out images, at fixed timesteps and fixed noise.

Training's own loss moves with each step's random timestep and noise; this one does not. At each validation
(before the first update, every ``--validation-every`` updates or at the end of each epoch, and at the end),
with no gradients and the adapter as trained so far, each validation image is evaluated at one fixed grid of
timesteps (:func:`timestep_grid`):

- ``low``: ``LOW_TIMESTEPS`` points evenly spaced below T, where the objective gates its perceptual terms in;
- ``high``: ``HIGH_TIMESTEPS`` points evenly spaced in [T, N), where it is L_LDM alone.

An image's latent is its VAE posterior's mean (computed once, the VAE is frozen), its caption its first one, its
noise at timestep t drawn from a generator seeded by (seed, image, t) on the host. Written per validation:

- ``loss_<term>`` for each perceptual term the objective returns (``loss_lpips``, ``loss_face``, any other): its
  mean over the ``low`` samples that have it, and ``n_<term>``, how many samples that is (a set without any face
  box has ``n_face`` 0 and ``loss_face`` 0: the term adds nothing to ``total`` either; the table shows "—");
- ``loss_ldm``: the mean over the whole range, each stratum weighted by its share (T/N below T, 1 − T/N above);
- ``total``: the objective's per-sample mixture under the run's λ, weighted the same way: the expected training
  loss at a uniformly drawn timestep, estimated on the grid.

One image is one batch (its grid's samples), whatever the training batch size; images are dealt to processes,
each image's sums gathered to every process and added exactly (``math.fsum``). So the numbers depend only on
the weights and the data: the same for any batch size, number of processes, or a resumed run. Validation uses
no global random state (what it draws comes from its own generators) and puts the adapter back in train mode,
so a run trains the same with or without it.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

# The grid (docs/performance.md, "validation loss", measured the cost): points below T (every term) and in [T, N).
LOW_TIMESTEPS = 5
HIGH_TIMESTEPS = 3
FILE = "validation.jsonl"
BEST = "best"


@dataclass(frozen=True)
class TimestepGrid:
    """The fixed timesteps: ``low`` below the threshold T (perceptual terms gated in), ``high`` in [T, N)."""

    low: tuple[int, ...]
    high: tuple[int, ...]
    threshold: int
    num_train_timesteps: int

    @property
    def timesteps(self) -> tuple[int, ...]:
        return self.low + self.high

    @property
    def low_share(self) -> float:
        """T/N: the share of the timestep range below T (the weight of the ``low`` stratum)."""
        return self.threshold / self.num_train_timesteps


def timestep_grid(threshold: int, num_train_timesteps: int, low: int = LOW_TIMESTEPS, high: int = HIGH_TIMESTEPS):
    """The midpoints of ``low`` equal bins of [0, T) and ``high`` equal bins of [T, N) (fewer if a range is short)."""

    def midpoints(start: int, stop: int, k: int) -> tuple[int, ...]:
        k = min(k, stop - start)
        return tuple(start + (2 * j + 1) * (stop - start) // (2 * k) for j in range(k))

    return TimestepGrid(
        midpoints(0, threshold, low), midpoints(threshold, num_train_timesteps, high), threshold, num_train_timesteps
    )


def noise_seed(seed: int, image: int, timestep: int) -> int:
    """The seed of image ``image``'s noise at ``timestep`` (apart from training's (seed, step, rank) seeds)."""
    return ((seed * 1_000_033 + image) * 10_007 + timestep + 7) % (2**63)


def validation_indices(n: int, limit: int, seed: int) -> list[int]:
    """All ``n`` images, or ``limit`` of them drawn once from ``seed`` (sorted)."""
    if not limit or limit >= n:
        return list(range(n))
    return sorted(torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()[:limit])


def epoch_ended(step: int, accumulation: int, batches_per_epoch: int) -> bool:
    """Whether update ``step`` (of ``accumulation`` micro-batches each) finished an epoch."""
    return (step * accumulation) // batches_per_epoch > ((step - 1) * accumulation) // batches_per_epoch


class _Items(torch.utils.data.Dataset):
    """The shard's dataset items, each with its index in the split."""

    def __init__(self, dataset: Any, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[int, dict[str, Any]]:
        return self.indices[k], self.dataset[self.indices[k]]


class ValidationLoss:
    """The validation loss of one run: when to measure, measuring, ``OUTPUT/validation.jsonl``, ``OUTPUT/best/``."""

    def __init__(self, run: Any, start_step: int) -> None:
        from humanfix.data.dataset import PreparedDataset

        cfg = run.config
        self.run = run
        self.dataset = PreparedDataset(Path(cfg.data) / cfg.validation_split, cfg.conditioning)
        self.indices = validation_indices(len(self.dataset), cfg.validation_images, cfg.seed)
        sched = run.components.noise_scheduler
        n_t = sched.config.num_train_timesteps
        self.grid = timestep_grid(cfg.objective.timestep_threshold, n_t, LOW_TIMESTEPS, HIGH_TIMESTEPS)
        self.path = Path(cfg.output) / FILE
        self.latents: dict[int, torch.Tensor] = {}  # image -> 1×4×h×w posterior mean (the VAE is frozen)
        self.best = math.inf
        acc = run.accelerator
        if acc.is_main_process:
            rows = self.rows()
            kept = [r for r in rows if start_step and r["step"] <= start_step]  # a fresh run starts the file anew
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
            if not start_step and cfg.keep_best:
                shutil.rmtree(Path(cfg.output) / BEST, ignore_errors=True)
            self.best = min((r["total"] for r in kept if _finite(r["total"])), default=math.inf)
        self.best = _broadcast_float(acc, self.best)
        log.info(
            "validation loss on %d image(s) of %s at timesteps %s (below T) and %s",
            len(self.indices), cfg.validation_split, list(self.grid.low), list(self.grid.high),
        )  # fmt: skip

    def rows(self) -> list[dict[str, Any]]:
        """The lines of ``validation.jsonl`` so far."""
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def due(self, step: int) -> bool:
        """Whether to measure after update ``step``: every N updates (or at each epoch's end), and at the end."""
        run, cfg = self.run, self.run.config
        if step >= run.total_steps:
            return True
        if cfg.validation_every:
            return step % cfg.validation_every == 0
        return epoch_ended(step, cfg.gradient_accumulation_steps, run.batches_per_epoch)

    def __call__(self, step: int) -> dict[str, Any]:
        """Measure at ``step``: log the line (file, TensorBoard, log), keep the best adapter; returns the line."""
        run, acc, cfg = self.run, self.run.accelerator, self.run.config
        t0 = time.perf_counter()
        # The adapter itself, not DDP's wrapper (whose forward would talk to the other processes, which may have
        # fewer images); accelerate's autocast stays on it.
        trainable = acc.unwrap_model(run.trainable)
        was_training = trainable.training
        devices = [acc.device] if acc.device.type == "cuda" else []
        trainable.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=devices):
                mine = self._measure(replace(run, trainable=trainable))
        finally:
            trainable.train(was_training)
        if acc.num_processes > 1:
            from accelerate.utils import gather_object

            mine = gather_object(mine)
        line = {
            "step": step,
            "epoch": round(step * cfg.gradient_accumulation_steps / run.batches_per_epoch, 4),
            "images": len(mine),
            **self._reduce(mine),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        line = {k: _json_number(v) for k, v in line.items()}
        if acc.is_main_process:
            with self.path.open("a") as f:
                f.write(json.dumps(line) + "\n")
            log.info("validation at step %d: %s", step, _summary(line))
        if cfg.log_with:
            terms = {f"val/{k}": v for k, v in line.items() if (k.startswith("loss_") or k == "total")}
            acc.log({k: v for k, v in terms.items() if v is not None}, step=step)
        total = line["total"]
        if cfg.keep_best and total is not None and total < self.best:
            from humanfix.train import save_adapter

            self.best = total
            save_adapter(run, Path(cfg.output) / BEST, step=step, validation_step=step, validation_total=total)
        return line

    # ------------------------------------------------------------------------------------------ measuring

    def _measure(self, run: Any) -> list[tuple[int, list[str], list[float]]]:
        """This process's images: (image, term names, sums) each; sums as in :meth:`_image_sums`."""
        acc = run.accelerator
        shard = self.indices[acc.process_index :: acc.num_processes]
        on_gpu = acc.device.type == "cuda"
        workers = run.config.workers
        if workers is None:
            workers = min(4, len(shard)) if on_gpu else 0
        loader = torch.utils.data.DataLoader(
            _Items(self.dataset, shard),
            batch_size=None,
            num_workers=workers,
            generator=torch.Generator().manual_seed(0),  # DataLoader's worker seed: never the global generator
        )
        found, names = [], None
        for index, item in loader:
            sums, names = self._image_sums(run, index, item)
            found.append((index, sums))
        values = torch.stack([s for _, s in found]).tolist() if found else []  # one wait for the device
        return [(index, names, v) for (index, _), v in zip(found, values, strict=True)]

    def _image_sums(self, run: Any, index: int, item: dict[str, Any]) -> tuple[torch.Tensor, list[str]]:
        """One image at every grid timestep, as one batch. Returns float64 sums on the device — Σ L_LDM and Σ of
        the per-sample total over ``low`` and over ``high``, then per perceptual term Σ value and Σ has over
        ``low`` — and the terms' names (the objective's ``has_<name>`` entries)."""
        from humanfix.data.dataset import collate
        from humanfix.train import loss_at

        grid = self.grid
        device = run.accelerator.device
        timesteps = grid.timesteps
        k, n_low = len(timesteps), len(grid.low)
        latent = self._latent(index, item)
        seeds = [noise_seed(run.config.seed, index, t) for t in timesteps]
        noise = torch.cat([torch.randn(latent.shape, generator=torch.Generator().manual_seed(s)) for s in seeds])
        noise = noise.to(device, non_blocking=True)
        batch = collate([item] * k)
        text = self._encode(item["captions"][0]).expand(k, -1, -1)
        out = loss_at(run, batch, latent.expand(k, -1, -1, -1), noise, torch.tensor(timesteps), text)
        ps = out.per_sample
        names = [key[len("has_") :] for key in ps if key.startswith("has_")]
        ldm, total = ps["ldm"].double(), ps["total"].double()
        sums = [ldm[:n_low].sum(), ldm[n_low:].sum(), total[:n_low].sum(), total[n_low:].sum()]
        for name in names:
            has = ps[f"has_{name}"][:n_low].double()
            sums += [(ps[name][:n_low].double() * has).sum(), has.sum()]
        return torch.stack(sums), names

    def _latent(self, index: int, item: dict[str, Any]) -> torch.Tensor:
        """Image ``index``'s latent: its VAE posterior's mean × the scaling factor, 1×4×h×w fp32 (cached)."""
        if index not in self.latents:
            c, acc = self.run.components, self.run.accelerator
            pixels = item["pixel_values"][None].to(acc.device, dtype=self.run.weight_dtype)
            self.latents[index] = c.vae.encode(pixels).latent_dist.mode().float() * c.vae.config.scaling_factor
        return self.latents[index]

    def _encode(self, caption: str) -> torch.Tensor:
        """The caption's text states: 1×77×D."""
        c, device = self.run.components, self.run.accelerator.device
        tok = c.tokenizer
        ids = tok(
            [caption], max_length=tok.model_max_length, padding="max_length", truncation=True, return_tensors="pt"
        )
        return c.text_encoder(ids.input_ids.to(device))[0]

    def _reduce(self, found: list[tuple[int, list[str], list[float]]]) -> dict[str, float]:
        """Every process's image sums -> the line's terms; exact sums (``math.fsum``), so no order matters."""
        grid = self.grid
        n = len(found)
        names = found[0][1] if found else []
        columns = list(zip(*(v for _, _, v in sorted(found)), strict=True)) if found else []
        share = grid.low_share

        def stratified(low: int, high: int) -> float:
            value = 0.0
            if grid.low:
                value += share * math.fsum(columns[low]) / (n * len(grid.low))
            if grid.high:
                value += (1 - share) * math.fsum(columns[high]) / (n * len(grid.high))
            return value

        line = {"loss_ldm": stratified(0, 1) if n else math.nan}
        for j, name in enumerate(names):
            value, count = math.fsum(columns[4 + 2 * j]), math.fsum(columns[5 + 2 * j])
            # No sample with the term (no face box in the set): 0, its weight in ``total`` too; n_<term> = 0 says so.
            line[f"loss_{name}"] = value / count if count else 0.0
            line[f"n_{name}"] = int(count)
        line["total"] = stratified(2, 3) if n else math.nan
        return line

    # ------------------------------------------------------------------------------------------ the table

    def table(self) -> Any:
        """A rich table of every validation so far; the lowest total in bold."""
        return validation_table(self.path)


def validation_table(path: Path) -> Any:
    """A rich table of the lines of a ``validation.jsonl``; the lowest total in bold."""
    from rich.table import Table

    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line] if Path(path).is_file() else []
    table = Table(title=f"validation loss ({path})")
    if not rows:
        return table
    keys = [k for k in rows[0] if k.startswith("loss_")] + ["total"]
    for name in ("step", "epoch", "images", *keys, "seconds"):
        table.add_column(name, justify="right")
    totals = [r["total"] if _finite(r["total"]) else math.inf for r in rows]
    best = totals.index(min(totals))
    for i, r in enumerate(rows):
        cells = [str(r["step"]), f"{r['epoch']:.2f}", str(r["images"])]
        cells += [_cell(None if r.get("n_" + k[5:]) == 0 else r.get(k)) for k in keys] + [f"{r['seconds']:.1f}"]
        table.add_row(*cells, style="bold green" if i == best else None)
    return table


def best_step(output: Path) -> int | None:
    """The step ``OUTPUT/best/`` came from, if there is one."""
    meta = Path(output) / BEST / "humanfix.json"
    return json.loads(meta.read_text()).get("validation_step") if meta.is_file() else None


def _broadcast_float(acc: Any, value: float) -> float:
    """The main process's ``value`` on every process."""
    if acc.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value])[0]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _json_number(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _cell(value: Any) -> str:
    return "—" if value is None else f"{value:.5f}"


def _summary(line: dict[str, Any]) -> str:
    return ", ".join(f"{k} {_cell(v)}" for k, v in line.items() if k.startswith("loss_") or k == "total")
