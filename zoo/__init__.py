"""`zoo`: text, image, audio, video and interleaved embedders behind one ``encode()``.

>>> import zoo
>>> m = zoo.create("sentence-transformers/all-MiniLM-L6-v2")
>>> m.encode(["a cat on a sofa"], modality="text").shape
(1, 384)
>>> zoo.rerank(m, "a cat", ["stock prices", "a kitten asleep"])[0].get("corpus_id")
1
"""

from .errors import (
    InputError,
    InvalidArgumentError,
    MissingExtraError,
    ModelUnavailableError,
    RemoteCodeRefusedError,
    ServerError,
    UnknownFamilyError,
    UnknownModelError,
    UnknownPromptError,
    UnsupportedModalityError,
    WeightsUnavailableError,
    ZooError,
)
from .ranking import rerank
from .registry import create, get_spec, list_models, register_family, register_model
from .spec import EmbedderSpec, Modality

__all__ = [
    "EmbedderSpec",
    "InputError",
    "InvalidArgumentError",
    "MissingExtraError",
    "Modality",
    "ModelUnavailableError",
    "RemoteCodeRefusedError",
    "ServerError",
    "UnknownFamilyError",
    "UnknownModelError",
    "UnknownPromptError",
    "UnsupportedModalityError",
    "WeightsUnavailableError",
    "ZooError",
    "create",
    "get_spec",
    "list_models",
    "register_family",
    "register_model",
    "rerank",
]
__version__ = "0.1.0"
