"""The configuration `stitchnet train` trains when no --model is given.

Chosen by `stitchnet reproduce --preset cpu` (run on an H100 on 2026-11-26, `docs/results/cpu-gpu`):
the semi-supervised candidate with the best mean validation lesion Dice over its seeds (0.354,
against 0.288-0.328 for the others; the test split is never used to choose). On test it scored
0.446 and 0.440 (2 seeds) against 0.390 +- 0.030 for the supervised U-Net: +0.032, short of
issue 9's +0.05 target, and within the seeds' spread of the same model without unlabelled slices.
"""

RECOMMENDED_MODEL = "stitchnet-skip"
RECOMMENDED_OBJECTIVE = "unimatch"  # with the ELBO on the unlabelled rows (elbo_unlabelled=True)
RECOMMENDED_OBJECTIVE_OVERRIDES: dict = {}
