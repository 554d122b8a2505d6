"""Training and evaluating the Wu 2020 classifier and hybrid (eMethods 4), as a schedule of stages.

Stages: ``stage1`` (sub-network 1 frozen), ``stage2`` (everything); the hybrid adds ``hybrid_mlp`` (sub-network 4
alone, full batch over the frozen image features, Rprop) and ``hybrid_finetune`` (all layers, SGD). Every epoch
ends with a patient-level validation AUC (DL-score = mean slice probability), a checkpoint and the hooks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from harness.config import ClassifierTraining
from harness.metrics.classification import PatientScores, patient_scores, roc_auc

from .engine import autocast


@dataclass(frozen=True)
class Stage:
    """One block of epochs with its optimiser and which parameters train."""

    name: str
    epochs: int
    optimizer: str
    lr: float
    freeze_subnetwork1: bool = False
    mlp_only: bool = False


def classifier_stages(train: ClassifierTraining, hybrid: bool) -> list[Stage]:
    """The schedule of eMethods 4 with the config's values (stages with 0 epochs are left out)."""
    stages = [
        Stage("stage1", train.stage1_epochs, train.stage1_optimizer, train.stage1_lr, freeze_subnetwork1=True),
        Stage("stage2", train.stage2_epochs, train.stage2_optimizer, train.stage2_lr),
    ]
    if hybrid:
        stages += [
            Stage("hybrid_mlp", train.hybrid_mlp_epochs, "rprop", 1e-2, mlp_only=True),
            Stage("hybrid_finetune", train.hybrid_finetune_epochs, "sgd", train.hybrid_finetune_lr),
        ]
    return [s for s in stages if s.epochs > 0]


def is_hybrid(model: torch.nn.Module) -> bool:
    return hasattr(model, "subnetwork4")


def clinical_of(batch: dict, device: torch.device) -> torch.Tensor:
    """The hybrid's clinical input (MR-LN status) from a batch; refuses samples without one."""
    status = batch["mr_ln_status"]
    if (status < 0).any():
        raise ValueError("wu2020_hybrid needs mr_ln_status for every patient: add it to manifest.csv")
    return status.to(device=device, dtype=torch.float32).unsqueeze(1)


def logits_of(model: torch.nn.Module, batch: dict, device: torch.device) -> torch.Tensor:
    images = batch["image"].to(device, non_blocking=True)
    return model(images, clinical_of(batch, device)) if is_hybrid(model) else model(images)


def classification_loss(model: torch.nn.Module, device: torch.device):
    """``loss_fn`` for `train_one_epoch`: cross-entropy on the slice labels."""

    def loss_fn(batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        logits = logits_of(model, batch, device)
        return F.cross_entropy(logits.float(), batch["label"].to(device)), {}

    return loss_fn


@dataclass
class SlicePredictions:
    """Per-slice outputs of one dataset, in dataset order."""

    probs: np.ndarray
    labels: np.ndarray
    patients: list[str]
    mr_ln_status: np.ndarray

    def patient_level(self) -> PatientScores:
        return patient_scores(self.probs, self.patients, self.labels)

    def patient_mr_ln(self, scores: PatientScores) -> np.ndarray:
        first = {p: s for p, s in zip(self.patients, self.mr_ln_status, strict=True)}
        return np.array([first[p] for p in scores.patients])


@torch.no_grad()
def predict_slices(
    model: torch.nn.Module, dataset: Dataset, device: torch.device, dtype: torch.dtype | None, batch_size: int
) -> SlicePredictions:
    """LNM probability of every slice (softmax of the last logit), in eval mode."""
    was_training = model.training
    model.eval()
    probs, labels, patients, status = [], [], [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        with autocast(device, dtype):
            logits = logits_of(model, batch, device)
        probs.append(logits.float().softmax(dim=1)[:, -1].cpu().numpy())
        labels.append(batch["label"].numpy())
        patients += list(batch["patient"])
        status.append(batch["mr_ln_status"].numpy())
    model.train(was_training)
    return SlicePredictions(np.concatenate(probs), np.concatenate(labels), patients, np.concatenate(status))


def quick_validation(predictions: SlicePredictions) -> dict[str, float]:
    """The per-epoch validation metrics: patient-level AUC (the DL-score's) and slice-level AUC."""
    scores = predictions.patient_level()
    return {
        "val_auc": roc_auc(scores.labels, scores.scores),
        "val_slice_auc": roc_auc(predictions.labels, predictions.probs),
    }


def trainable_parameters(model: torch.nn.Module, stage: Stage, hybrid_l2: float) -> list[dict]:
    """Parameter groups of a stage: freezing per the stage, the hybrid MLP with its own L2 weight decay."""
    for name, parameter in model.named_parameters():
        frozen = (stage.freeze_subnetwork1 and name.startswith("subnetwork1.")) or (
            stage.mlp_only and not name.startswith("subnetwork4.")
        )
        parameter.requires_grad_(not frozen)
    mlp = [p for n, p in model.named_parameters() if n.startswith("subnetwork4.") and p.requires_grad]
    rest = [p for n, p in model.named_parameters() if not n.startswith("subnetwork4.") and p.requires_grad]
    groups = [{"params": rest}] if rest else []
    if mlp:
        groups.append({"params": mlp, "weight_decay": hybrid_l2})
    return groups


@torch.no_grad()
def frozen_features(model: torch.nn.Module, dataset: Dataset, device: torch.device, batch_size: int) -> dict:
    """GAP features, clinical inputs and labels of a whole dataset (the hybrid MLP stage trains on these)."""
    model.eval()
    features, clinical, labels = [], [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        features.append(model.features(batch["image"].to(device)))
        clinical.append(clinical_of(batch, device))
        labels.append(batch["label"].to(device))
    return {"features": torch.cat(features), "clinical": torch.cat(clinical), "labels": torch.cat(labels)}


def mlp_full_batch_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, cached: dict) -> float:
    """One full-batch Rprop step of sub-network 4 on cached features (Rprop needs the full gradient's sign)."""
    model.subnetwork4.train()
    logits = model.subnetwork4(torch.cat([cached["features"], cached["clinical"]], dim=1))
    loss = F.cross_entropy(logits, cached["labels"])
    # Rprop ignores weight decay: add the L2 term to the loss (the paper's L2 regularisation).
    l2 = sum((p**2).sum() for p in model.mlp_parameters())
    decay = optimizer.param_groups[-1].get("l2", 0.0)
    optimizer.zero_grad(set_to_none=True)
    (loss + decay * l2).backward()
    optimizer.step()
    return float(loss.item())
