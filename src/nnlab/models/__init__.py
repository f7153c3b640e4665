"""Model families; importing this package fills the registry."""

from nnlab.models import classic, fast, keras_cnn, resnet, siamese, tagger  # noqa: F401  (registration)
from nnlab.models.registry import check_args, create, get, names, options, register, unregister

__all__ = ["check_args", "create", "get", "names", "options", "register", "unregister"]
