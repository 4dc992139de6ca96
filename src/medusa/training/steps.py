"""One training epoch and one pass of prediction over a loader: mixed precision, the guards
against non-finite losses and weights, and the holdout's scores."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from medusa.core.emotions import ATTRIBUTES, CLASS_LETTERS
from medusa.core.metrics import classification_metrics
from medusa.training.model import DeepSER, total_loss

# ---------------------------------------------------------------------------------------------
# One epoch of training, prediction


def autocast(device: torch.device, amp: bool):
    """bf16 autocast when `amp` (the config's) is on and the device is CUDA; CPUs keep float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


class NonFiniteTrainingError(FloatingPointError):
    """A training step gave a non-finite loss or gradient; its update was not applied."""


def non_finite_step(model: DeepSER, loss: torch.Tensor) -> str | None:
    """What is not finite after a backward pass (the loss, a parameter's gradient), else None.

    One device synchronisation per step: a single flag over the loss and the gradient norm.
    """
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads, foreach=True) if grads else loss.new_zeros(())
    if bool(torch.isfinite(loss.detach().float() + norm)):
        return None
    if not bool(torch.isfinite(loss)):
        return f"loss {loss.item()}"
    for name, p in model.named_parameters():
        if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
            return f"gradient of {name}"
    return f"gradient norm ({norm.item()})"


def require_finite_weights(state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Refuse to write weights that are not all finite: a model that learnt nothing usable."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise NonFiniteTrainingError(f"{path}: not written, non-finite weights in {bad[:3]}")


def train_one_epoch(
    model: DeepSER,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    targets: torch.Tensor,
    attributes: torch.Tensor,
    class_weights: torch.Tensor,
    loss_weights: tuple[float, float],
    mixup_generator: torch.Generator,
    device: torch.device,
    amp: bool,
    where: str = "training",
) -> dict:
    """One pass over `loader`; returns mean losses, steps and time spent waiting for data.

    Stops with NonFiniteTrainingError (naming `where` and the batch) at the first non-finite
    loss or gradient, before the optimiser applies it.
    """
    model.train()
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    files = steps = 0
    wait = 0.0
    start = time.perf_counter()
    batches = iter(loader)
    while True:
        tick = time.perf_counter()
        batch = next(batches, None)
        wait += time.perf_counter() - tick
        if batch is None:
            break
        features, masks = to_device(batch, device)
        index = batch["index"]
        y_class = targets[index].to(device, non_blocking=True)
        y_attr = attributes[index].to(device, non_blocking=True)
        with autocast(device, amp):
            logits, attrs, y_class, y_attr = model(
                features, masks, y_class, y_attr, generator=mixup_generator
            )
            loss, ce, mse = total_loss(logits, attrs, y_class, y_attr, class_weights, *loss_weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        problem = non_finite_step(model, loss)
        if problem is not None:
            raise NonFiniteTrainingError(
                f"{where}, batch {steps + 1} of {len(loader)}: non-finite {problem}. Stopped "
                "before applying it: no checkpoint was written, and the resume state keeps "
                "the last completed epoch (if any). Usual causes: a learning rate too large, "
                "features with extreme values."
            )
        optimizer.step()
        n = len(index)
        totals += torch.stack([loss.detach(), ce.detach(), mse.detach()]).double() * n
        files += n
        steps += 1
    seconds = time.perf_counter() - start
    loss, ce, mse = (totals / max(files, 1)).tolist()
    return {
        "files": files,
        "loss": loss,
        "ce": ce,
        "mse": mse,
        "steps": steps,
        "seconds": seconds,
        "data_wait_seconds": wait,
    }


@torch.no_grad()
def predict(
    model: DeepSER, loader: DataLoader, n: int, device: torch.device, amp: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(softmax posteriors [n, C], attributes [n, 3]) in dataset order."""
    model.eval()
    probs = np.zeros((n, model.classifier.out_features), dtype=np.float32)
    attrs = np.zeros((n, len(ATTRIBUTES)), dtype=np.float32)
    for batch in loader:
        features, masks = to_device(batch, device)
        with autocast(device, amp):
            logits, attributes, _, _ = model(features, masks)
        index = batch["index"].numpy()
        probs[index] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        attrs[index] = attributes.float().cpu().numpy()
    return probs, attrs


def score(
    probs: np.ndarray, labels: np.ndarray, classes: Sequence[str] = CLASS_LETTERS
) -> tuple[dict, dict]:
    """(class-balanced metrics over every clip, plain metrics over every clip)."""
    predicted = probs.argmax(axis=1)
    return (
        classification_metrics(labels, predicted, balanced=True, classes=classes),
        classification_metrics(labels, predicted, classes=classes),
    )


def to_device(batch: dict, device: torch.device) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    features = [f.to(device, non_blocking=True).float() for f in batch["features"]]
    masks = [m.to(device, non_blocking=True) for m in batch["masks"]]
    return features, masks
