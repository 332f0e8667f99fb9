"""The configuration `stitchnet train` trains when no --model is given.

Chosen by `stitchnet reproduce --preset cpu` (on lent GPUs, 2026-11-26, `docs/results/cpu-gpu`)
with one rule: the semi-supervised candidate with the best mean validation lesion Dice over its
seeds; the test split is never used to choose. Since the third lease that is StitchNet-skip with
one-pass FixMatch, lesion paste and the ELBO on the unlabelled rows (validation 0.364, against
0.363 without the paste, 0.356 for the earlier choice with UniMatch, 0.264-0.328 for the U-Net
with a consistency method). These three are tied on validation, so the rule's pick is not a
measured win.

On test (lesion Dice), against the supervised U-Net of the same seeds:
- 30 labelled slices: 0.439, 0.411, 0.471 against 0.410, 0.412, 0.347 (mean gain +0.051, but one
  seed at -0.001: issue 9's target of +0.05 on every seed is missed by the letter). UniMatch
  scored 0.446, 0.440, 0.477: better on all three seeds, inside the seeds' spread.
- 5 labelled slices, 4 seeds: 0.310, 0.434, 0.357, 0.300 against 0.335, 0.361, 0.378, 0.262 (mean
  gain +0.017, target +0.10 missed). UniMatch: 0.231, 0.305, 0.385, 0.294.
- Its step costs ~3.2x a supervised U-Net step on 2 CPU cores (UniMatch: 7.2x; target 3x).
- All of the above is at the `cpu` preset's 60 epochs, where the U-Net is still learning. With
  both trained for 120 epochs (fifth lease, docs/results/cpu-gpu/extra/schedule.md) the gain over
  the U-Net is +0.033 at 30 slices (one seed negative), +0.001 at 15 and -0.020 at 5: not shown.
"""

RECOMMENDED_MODEL = "stitchnet-skip"
RECOMMENDED_OBJECTIVE = "one_pass"  # the ELBO of every row rides in its one student pass
RECOMMENDED_OBJECTIVE_OVERRIDES: dict = {"lesion_paste": 0.5}
# Scanner variation (stitchnet/scanner_aug.py) on: the shipped default is trained with it, on the
# HU-calibrated slices (experiments/realct_default/README.md compares it).
RECOMMENDED_SCANNER_AUG = True
