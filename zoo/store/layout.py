"""What a collection holds, in words both backends of :mod:`zoo.store` turn into their own parameters.

The output kinds (:mod:`zoo.kinds`) say what their collections hold (:meth:`~zoo.kinds.OutputKind.store_collection`)
as a :class:`Layout`; the embedded backend (Qdrant Edge) and the server backend (qdrant-client) each build their
own configuration from it, so one description decides both and a shard made embedded fits a server collection.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidArgumentError

#: ``precision`` of :meth:`zoo.store.VectorStore.ensure` → Qdrant's quantization of the stored vectors (Qdrant
#: keeps the float32 originals too and rescores with them); precisions absent here have no Qdrant counterpart
QUANTIZATION: dict[str, str | None] = {"float32": None, "int8": "int8", "binary": "binary", "ubinary": "binary"}


@dataclass(frozen=True)
class Layout:
    """One named vector of a collection: dense (``size`` wide), several per point scored by MaxSim
    (``multivector``) or sparse (any width, ``size`` 0); dense and multi-vectors are scored by inner product
    and may be quantized (``"int8"`` scalar or ``"binary"``)."""

    name: str
    size: int = 0
    multivector: bool = False
    sparse: bool = False
    quantization: str | None = None

    def fits(self, other: Layout | None) -> bool:
        """Whether an existing collection's vector ``other`` holds what this layout asks for (the same name,
        shape and width; quantization is a setting of the existing collection and is kept as it is)."""
        return other is not None and (other.name, other.size, other.multivector, other.sparse) == (
            self.name, self.size, self.multivector, self.sparse)


def quantization(precision: str) -> str | None:
    """The quantization a collection gets for ``precision``, or an error naming the precisions that have one."""
    if precision not in QUANTIZATION:
        raise InvalidArgumentError(f"precision {precision!r} has no quantization in the vector database: choose "
                                   "float32 (none), int8 (scalar) or binary / ubinary (binary)", "precision")
    return QUANTIZATION[precision]
