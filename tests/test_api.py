"""The plain API: what the README promises is importable, and it does not hide the submodules."""

import importlib

import stitchnet


def test_public_names_are_the_pipeline_objects():
    from stitchnet import pipeline

    assert stitchnet.fit is pipeline.fit
    assert stitchnet.evaluate_folder is pipeline.evaluate_folder
    assert stitchnet.predict_folder is pipeline.predict_folder
    assert set(stitchnet.__all__) <= set(dir(stitchnet))


def test_submodules_are_not_shadowed_by_functions():
    for name in ("train", "evaluate", "study", "pipeline", "metrics", "checkpoint"):
        module = importlib.import_module(f"stitchnet.{name}")
        assert getattr(stitchnet, name) is module, name


def test_model_built_by_name_matches_its_preset():
    model = stitchnet.build_model("unet", stitchnet.model_config("unet", "debug"))
    assert model.name == "unet" and model.config.width_mult == 0.35
