"""One small exception hierarchy for everything `zoo` raises on purpose.

Every message names the valid choices or the fix. The server sends these over the wire as
``"[ClassName] message"`` so that the client can raise the same class again (see
:func:`to_wire` / :func:`from_wire`). Each class also carries a protocol-neutral ``code``
(:data:`CODES`): servers map it to their protocol's status (gRPC ``INVALID_ARGUMENT`` / HTTP 400, …).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

#: protocol-neutral error codes; servers map them to gRPC status codes and HTTP statuses
CODES = ("invalid_argument", "not_found", "unavailable", "internal")


class ZooError(Exception):
    """Base class of every error `zoo` raises deliberately."""

    code = "internal"  # one of CODES: what a server answers with (overridden by subclasses)


class _UnknownName(ZooError, KeyError):
    """A name that is not in a registry (its message suggests close matches)."""

    code = "not_found"

    @staticmethod
    def _hint(name: str, known: Iterable[str]) -> str:
        close = difflib.get_close_matches(name, list(known), n=5, cutoff=0.4)
        return f" Did you mean: {', '.join(close)}?" if close else ""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class UnknownModelError(_UnknownName):
    """A name is neither a registered model nor a local model folder."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        super().__init__(
            f"unknown model {name!r}.{self._hint(name, known)} See `zoo list` for registered names, or pass a "
            "local model folder path."
        )


class UnknownFamilyError(_UnknownName):
    """A spec names a family that is not registered."""

    def __init__(self, family: str, known: Iterable[str], model: str = "") -> None:
        of = f" (model {model!r})" if model else ""
        super().__init__(f"unknown family {family!r}{of}.{self._hint(family, known)} Registered families: "
                         f"{choices(sorted(known))}.")


class UnsupportedModalityError(ZooError, ValueError):
    """The model has no tower for the requested modality."""

    code = "invalid_argument"


class InvalidArgumentError(ZooError, ValueError):
    """A call argument (precision, dimensions, prompt name, batch size, inputs) is not valid; ``param`` names
    the argument when one is at fault (an API answers with it)."""

    code = "invalid_argument"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class UnknownPromptError(InvalidArgumentError):
    """``prompt_name`` names no prompt of the model."""

    code = "not_found"


class RemoteCodeRefusedError(ZooError, ValueError):
    """A checkpoint runs only with modelling code of its own from the hub (``trust_remote_code``), which `zoo`
    never executes; the message names what to use instead."""

    code = "invalid_argument"


class InputError(ZooError, ValueError):
    """One input item could not be decoded or used; ``index`` is its position in the call."""

    code = "invalid_argument"

    def __init__(self, index: int, message: str) -> None:
        self.index = index
        self.reason = message
        super().__init__(f"input {index}: {message}")

    def __reduce__(self):  # keeps pickling (e.g. across processes) working with two args
        return (type(self), (self.index, self.reason))


class WeightsUnavailableError(ZooError, OSError):
    """The weights of a registered model cannot be found locally or downloaded."""

    code = "unavailable"


class MissingExtraError(ZooError, ImportError):
    """A part of embedding-zoo is used without the extra that installs what it needs (see :mod:`zoo.extras`)."""

    code = "unavailable"


class ServerError(ZooError, RuntimeError):
    """The inference server failed in a way that maps to no more specific `zoo` error."""


class ModelUnavailableError(ServerError):
    """The served model is not ready right now (loading, or being restarted); retrying later can work."""

    code = "unavailable"


class OverloadedError(ModelUnavailableError):
    """The server is offered more than it can do and refused the request before working on it (its queue is
    full, or the request waited past the queue-time limit): retrying after a pause works. HTTP 429, gRPC
    ``UNAVAILABLE`` / ``RESOURCE_EXHAUSTED``. ``retry_after`` is the pause the server suggested, in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def choices(values: Iterable[object]) -> str:
    """Format valid choices for an error message."""
    return ", ".join(repr(v) for v in values)


_WIRE = re.compile(r"\[(?P<cls>[A-Za-z]+Error)\] (?P<msg>.*)", re.S)


INTERNAL_MESSAGE = "internal error while embedding; the server log has the details"


def code_of(err: BaseException) -> str:
    """The protocol-neutral code (see :data:`CODES`) a server answers ``err`` with."""
    return err.code if isinstance(err, ZooError) else "internal"


def to_wire(err: BaseException) -> str:
    """Encode an exception as a message a remote peer can turn back into the same class.

    Only `zoo`'s own errors keep their text: anything else may quote server internals (paths, library
    messages), so it travels as a fixed message and the details stay in the server's log."""
    if isinstance(err, ZooError):
        return f"[{type(err).__name__}] {err}"
    return f"[ServerError] {INTERNAL_MESSAGE}"


def is_wire(message: str) -> bool:
    """Whether ``message`` carries an error :func:`to_wire` encoded (anything else came from the server itself)."""
    return _WIRE.search(message) is not None


def from_wire(message: str) -> ZooError:
    """Rebuild the `zoo` error that :func:`to_wire` encoded inside ``message`` (or a ServerError)."""
    match = _WIRE.search(message)
    if not match:
        return ServerError(message)
    cls = {c.__name__: c for c in _all_subclasses(ZooError)}.get(match["cls"], ServerError)
    text = match["msg"]
    if cls is InputError:
        m = re.match(r"input (\d+): (.*)", text, re.S)
        return InputError(int(m[1]), m[2]) if m else ServerError(text)
    if issubclass(cls, _UnknownName):  # built from a name and the known ones: keep the text as it came
        err = ZooError.__new__(cls)
        Exception.__init__(err, text)
        return err
    return cls(text)


def _all_subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out
