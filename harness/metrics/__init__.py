"""Evaluation metrics of the harness: Wu 2020's patient-level classifier metrics and Lu 2018's detector metrics.

Definitions and conventions: docs/metrics.md. Library first: scikit-learn (ROC, AUC), scipy.stats (bootstrap,
Mann-Whitney), pycocotools (COCO mAP); hand-written and tested against independent computations: DeLong's test,
Lu's AP (Eq. A) and the FROC. Paired comparison of configurations (DeLong, Holm, MDD, best set): `paired`.
"""

from .classification import (
    ConfidenceInterval,
    PatientScores,
    bootstrap_auc_ci,
    classifier_report,
    classifier_report_keys,
    patient_scores,
    roc_auc,
    score_distribution,
    slice_auc,
    threshold_metrics,
    youden_threshold,
)
from .delong import DeLongResult, delong_auc_ci, delong_covariance, delong_test
from .detection import (
    average_precision_per_class,
    coco_map,
    detection_pr_curve,
    detector_report,
    detector_report_keys,
    image_level_auc,
    mean_ap,
    patient_level_auc,
)
from .froc import FROC_RATES, FrocResult, froc
from .paired import (
    PairedComparison,
    best_set,
    compare_auc,
    format_p,
    holm,
    minimum_detectable_difference,
    verdict,
)

__all__ = [
    "FROC_RATES",
    "ConfidenceInterval",
    "DeLongResult",
    "FrocResult",
    "PairedComparison",
    "PatientScores",
    "average_precision_per_class",
    "best_set",
    "bootstrap_auc_ci",
    "classifier_report",
    "classifier_report_keys",
    "coco_map",
    "compare_auc",
    "delong_auc_ci",
    "delong_covariance",
    "delong_test",
    "detection_pr_curve",
    "detector_report",
    "detector_report_keys",
    "format_p",
    "froc",
    "holm",
    "image_level_auc",
    "mean_ap",
    "minimum_detectable_difference",
    "patient_level_auc",
    "patient_scores",
    "roc_auc",
    "score_distribution",
    "slice_auc",
    "threshold_metrics",
    "verdict",
    "youden_threshold",
]
