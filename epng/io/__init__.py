"""The lowest layer: file formats and codecs, with no knowledge of datasets or metrics.

It imports only the standard library, numpy, torch/torchvision, PIL, pycocotools and
:mod:`epng.errors`; every other layer may import it.

* :mod:`epng.io.json_file`: reading a JSON file, checking integer values;
* :mod:`epng.io.rle`: COCO masks: run-length encoding (validated) and polygons;
* :mod:`epng.io.panoptic_png`: panoptic PNGs, segment ids encoded in RGB;
* :mod:`epng.io.images`: decoding JPEG/PNG image files;
* :mod:`epng.io.image_header`: an image file's header, its size checked before decoding;
* :mod:`epng.io.limits`: the bounds on untrusted input (image pixels, captions, file and line sizes).
"""
