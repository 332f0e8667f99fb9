"""StitchNet: semi-supervised segmentation of COVID-19 lung CT.

Everything the CLI does is one import away:

    from stitchnet import fit, evaluate_folder, predict_folder, build_model, read_source

(The training loop, the evaluator and `reproduce` live in the submodules `stitchnet.train`,
`stitchnet.evaluate` and `stitchnet.reproduce`; they are not re-exported under those same names,
which would hide the submodules.)
"""

__version__ = "0.1.0"

from stitchnet.config import DataConfig, RunConfig, TrainConfig  # noqa: E402
from stitchnet.data import prepare, read_source  # noqa: E402
from stitchnet.evaluate import format_table1  # noqa: E402
from stitchnet.models import MODEL_NAMES, build_model, model_config  # noqa: E402
from stitchnet.pipeline import (  # noqa: E402
    evaluate_folder,
    fit,
    predict_folder,
    prepare_folder,
    run_config,
)

__all__ = [
    "MODEL_NAMES",
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
]
