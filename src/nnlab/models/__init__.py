"""Model families; importing this package fills the registry."""

from nnlab.models import (  # noqa: F401  (registration)
    classic,
    fast,
    keras_cnn,
    minilm_pairs,
    resnet,
    siamese,
    tagger,
)
from nnlab.models.registry import (
    EXTRAS,
    check_args,
    check_extra,
    create,
    get,
    is_conv,
    names,
    options,
    register,
    unregister,
)

__all__ = ["EXTRAS", "check_args", "check_extra", "create", "get", "is_conv", "names", "options", "register",
           "unregister"]
