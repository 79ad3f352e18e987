"""The pipeline layer: a field's run from a config, and a batch of fields over a survey.

``run_field(load_field("field.yaml"))`` runs every band of a field through preprocessing,
drizzle, UPDC, catalogues and previews (:mod:`mosaic.pipeline.steps`), recording each step in
the store so that a killed run continues where it stopped (:mod:`mosaic.pipeline.field`);
``run_survey(load_survey("survey.yaml"))`` runs many fields on one cluster, one failing field
not stopping the others (:mod:`mosaic.pipeline.batch`).
"""

from mosaic.pipeline.batch import SurveyReport, run_survey
from mosaic.pipeline.field import BandReport, FieldReport, StepRow, check_config, run_band, run_field
from mosaic.pipeline.steps import STEPS, BandRun, Outcome, Step

__all__ = [
    "STEPS",
    "BandReport",
    "BandRun",
    "FieldReport",
    "Outcome",
    "Step",
    "StepRow",
    "SurveyReport",
    "check_config",
    "run_band",
    "run_field",
    "run_survey",
]
