"""The lung field in one place: where the lungs are, on a slice and in a whole scan.

    net.py     the paper's 2-D lung-field U-Net: load the shipped weights, find and clean the
               field of each slice, the box slices are cropped to
    body.py    the patient's body from HU (and, on windowed slices, the air around it): where
               lungs can be and where they never are
    volume.py  the per-slice fields of a scan cleaned in 3-D inside the body, the lungs chosen
               among their components and split into the patient's right and left
    train.py   training the 2-D net, and `python -m stitchnet.lungfield.train`, which rebuilds
               the shipped weights; nothing that segments imports it

Nothing is imported here, so that `python -m stitchnet.lungfield.train` finds its module
unimported and segmenting never loads the trainer.
"""
