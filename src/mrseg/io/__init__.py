"""Image input and output: the image object, files, DICOM series, axis orientation, labels onto another grid."""

from mrseg.io.files import IMAGE_SUFFIXES, case_name, image_suffix, read_image, write_image
from mrseg.io.image import Geometry, Image
from mrseg.io.orientation import Reorientation, orientation_code, reorient
from mrseg.io.resample import resample_labels

__all__ = [
    "IMAGE_SUFFIXES", "Geometry", "Image", "Reorientation", "case_name", "image_suffix",
    "orientation_code", "read_image", "reorient", "resample_labels", "write_image",
]
