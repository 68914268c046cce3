"""Image input and output: the image object, files, DICOM series and axis orientation."""

from mrseg.io.files import IMAGE_SUFFIXES, case_name, image_suffix, read_image, write_image
from mrseg.io.image import Geometry, Image
from mrseg.io.orientation import Reorientation, orientation_code, reorient

__all__ = [
    "IMAGE_SUFFIXES", "Geometry", "Image", "Reorientation", "case_name", "image_suffix",
    "orientation_code", "read_image", "reorient", "write_image",
]
