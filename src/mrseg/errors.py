"""The package's exceptions: one for bad input, one for bad models."""


class MrsegError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(MrsegError, ValueError):
    """An input image, folder or option cannot be used; the message says why and how to fix it."""


class ModelError(MrsegError, ValueError):
    """A model folder, plans file or checkpoint cannot be used; the message says why and how to fix it."""
