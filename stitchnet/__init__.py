"""StitchNet: semi-supervised segmentation of COVID-19 lung CT.

Everything the CLI does is one import away:

    from stitchnet import fit, evaluate_folder, predict_folder, build_model, read_source

(The training loop and the evaluator live in the submodules `stitchnet.train` and
`stitchnet.evaluate`; they are not re-exported under those same names, which would hide the
submodules. The paper's comparison, `reproduce`, and its report are the study, not the tool:
`stitchnet.study`, which nothing in the package imports but the CLI.)
"""

from stitchnet.config import DataConfig, RunConfig, TrainConfig
from stitchnet.data import prepare, read_source
from stitchnet.evaluate import format_table1
from stitchnet.inference.cohort import segment_cohort
from stitchnet.models import MODEL_NAMES, build_model, model_config
from stitchnet.pipeline import (
    evaluate_folder,
    fit,
    predict_folder,
    prepare_folder,
    run_config,
)
from stitchnet.version import __version__

__all__ = [
    "MODEL_NAMES",
    "__version__",
    "DataConfig",
    "RunConfig",
    "TrainConfig",
    "build_model",
    "evaluate_folder",
    "fit",
    "format_table1",
    "model_config",
    "predict_folder",
    "prepare",
    "prepare_folder",
    "read_source",
    "run_config",
    "segment_cohort",
]
