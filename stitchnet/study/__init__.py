"""The study: the paper's comparison (`stitchnet reproduce`) and its report (`stitchnet report`).

It sits on top of the tool and apart from it: the study imports the plain API (`pipeline`,
`evaluate`, `metrics`, `checkpoint`), and nothing in the package imports the study except the
CLI, lazily, for those two commands.

    protocol        the variants, the "with"/"without" pairs, each preset's share of the
                    comparison, the paper's Table 1, run paths, the environment record
    run             reproduce: train and test every run, choose the recommended model
    calibration     calibration of trained runs on their test split (ECE, Brier, AUROC, ...)
    results         finished runs read back, and the tables made of them
    report          report.md and report.html of a reproduce folder
    report_figures  the report's figures from the runs' checkpoints
"""
