"""Training: the default optimizer and the release of spent ones, stage plans, resumable progress, progressive blending, learning-rate decay on plateaus, VaDE pre-training, distributed loss scaling, histories."""
from .adam import FusedAdam
from .checkpoint import FitProgress
from .history import merge_histories
from .kl_warmup import KLWarmup
from .plan import MODES, training_plan
from .prior_init import PriorUpdate, fit_priors, posteriors
from .plateau import ReduceLROnPlateau
from .progressive import ProgressiveBlending
from .release import release
from .scaling import global_mean, multi_worker

__all__ = ["MODES", "FitProgress", "FusedAdam", "KLWarmup", "PriorUpdate", "ProgressiveBlending", "ReduceLROnPlateau", "fit_priors", "global_mean", "merge_histories", "multi_worker", "posteriors", "release", "training_plan"]
