"""The configuration `stitchnet train` trains when no --model is given.

Chosen by `stitchnet reproduce --preset cpu` (run on an H100 on 2026-11-26, `docs/results/cpu-gpu`):
the semi-supervised candidate with the best mean validation lesion Dice over its seeds (0.356,
against 0.264-0.328 for the others; the test split is never used to choose). On test it scored
0.446, 0.440 and 0.477 against 0.410, 0.412 and 0.347 for the supervised U-Net of the same seeds
(mean gain +0.065, issue 9's +0.05 target at 30 labelled slices), but with 5 labelled slices it
loses to the U-Net (-0.105, -0.056), and its gain over the same model without unlabelled slices
(+0.022, -0.004, +0.058) is inside the seeds' spread.
"""

RECOMMENDED_MODEL = "stitchnet-skip"
RECOMMENDED_OBJECTIVE = "unimatch"  # with the ELBO on the unlabelled rows (elbo_unlabelled=True)
RECOMMENDED_OBJECTIVE_OVERRIDES: dict = {}
