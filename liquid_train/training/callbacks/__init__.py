"""Everything around the step, one small callback each (OLMo-core's callbacks, torchtitan's ``components/``):
metrics sinks, evaluation, T2I sample grids, the progress bar, preemption signals and the checkpointer.

:func:`default_callbacks` assembles them for a run config, in the order the loop needs: the metrics sink first (it
writes every record the others emit), then progress, evaluation and samples, then preemption (agreed across ranks
at the step boundary) and last the checkpointer (which saves at its interval, on preemption and at the end).
"""
from liquid_train.training.callbacks.base import Callback
from liquid_train.training.callbacks.checkpointer import Checkpointer
from liquid_train.training.callbacks.evaluation import Evaluation
from liquid_train.training.callbacks.metrics import MetricsSink
from liquid_train.training.callbacks.preemption import Preemption
from liquid_train.training.callbacks.progress import Progress
from liquid_train.training.callbacks.samples import T2ISamples

__all__ = ["Callback", "Checkpointer", "Evaluation", "MetricsSink", "Preemption", "Progress", "T2ISamples",
           "default_callbacks"]


def default_callbacks(cfg, checkpointer: Checkpointer, resume_step: int, is_logging_rank: bool, config: dict):
    """The callbacks a run config asks for (``checkpointer`` is built first: it resumes the run)."""
    callbacks = [MetricsSink(cfg, resume_step, is_logging_rank, config)]
    if cfg.logging.progress and is_logging_rank:
        callbacks.append(Progress())
    callbacks.append(Evaluation(cfg.train.eval_interval, cfg.train.eval_iters))
    if cfg.sampling.interval:
        callbacks.append(T2ISamples(cfg.sampling))
    callbacks += [Preemption(), checkpointer]
    return callbacks
