"""The engine: ``Pipeline(cfg).run()`` runs the stages in order, skipping those whose recorded
fingerprint still matches (see :mod:`lorapipe.pipeline.runner`); every surface calls it."""

from lorapipe.pipeline.runner import Pipeline, RunResult, run
from lorapipe.pipeline.stages import STAGES, Stage

__all__ = ["STAGES", "Pipeline", "RunResult", "Stage", "run"]
