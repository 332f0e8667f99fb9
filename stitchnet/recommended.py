"""The configuration `stitchnet train` trains when no --model is given.

Chosen by `stitchnet reproduce --preset cpu`: the semi-supervised candidate with the best mean
validation lesion Dice over 3 seeds (the test split is never used to choose). The measured
numbers, and why, are in docs/methods.md ("The recommended model").
"""

RECOMMENDED_MODEL = "stitchnet-skip"
RECOMMENDED_OBJECTIVE = "unimatch"
RECOMMENDED_OBJECTIVE_OVERRIDES: dict = {}
