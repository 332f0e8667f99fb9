"""Inference on whole scans: a CT volume in, a lung-bounded 3-D label map and lesion burden out.

    from stitchnet.data.volumes import read_volume
    from stitchnet.inference.defaults import load_segmentation_model
    from stitchnet.inference.segment import segment_volume

    model, run_config, info = load_segmentation_model()  # the shipped default model
    result = segment_volume(model, run_config.data, read_volume("scan.nii.gz"))
    result.labels  # (Z, Y, X) uint8 class ids in display orientation, 0 outside the lungs

Modules, one idea each:
    kernel.py    pre-processed slices -> logits -> argmax -> class ids at each slice's own size
                 (shared with `predict_folder`)
    fast.py      an eval-only copy of a model with batch norm folded into its convolutions
    segment.py   `segment_volume`: the whole volume through the lung segmenter and the model
    burden.py    lung, GGO and consolidation volume in mL and as % of lung, per side and in total
    uncertainty.py  predictive entropy / mutual information from posterior draws or flips, and
                 the lung label's uncertainty for whole scans
    twin.py      the healthy twin: lesion voxels brought to the surrounding healthy lung's HU
    orient.py    pictures for people in the radiological view (anterior up, the patient's
                 right on the image's left) with A / P / R / L at the edges
    viewer.py    one self-contained HTML viewer (report.html) over a segmented scan
    png.py       PNG encoding that runs beside other work (the overlays, the report's slices)
    dicom_seg.py the labels as a DICOM Segmentation over the source series (--dicom-seg)
    outputs.py   optional outputs: one that fails is left out whole and recorded, not raised
    predict.py   `predict_folder`: a mask and an overlay per slice of a slice source (predict)
    scan.py      `segment_scan`: read, segment, write every output atomically into one folder
    defaults.py  the shipped default model: where it is and how it loads (stitchnet.make_default
                 makes it from a run)

The lung field a scan is bounded by (the 2-D lung-field net, the body, the 3-D clean-up and the
split into right and left) is `stitchnet.lungfield`.
"""
