"""Training: stage plans, progressive blending, distributed loss scaling, histories."""
from .history import merge_histories
from .plan import MODES, training_plan
from .prior_init import PriorInitialization
from .progressive import ProgressiveBlending
from .scaling import global_mean

__all__ = ["MODES", "PriorInitialization", "ProgressiveBlending", "global_mean", "merge_histories", "training_plan"]
