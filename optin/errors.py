"""User-facing errors. The CLI maps every OptinError to one line and exit code 2."""


class OptinError(Exception):
    """Base class: the message names the problem and the fix."""


class UnsupportedModel(OptinError):
    pass


class BadData(OptinError):
    pass


class BadInput(OptinError):
    pass


class InfeasibleBudget(OptinError):
    pass


class ParityError(OptinError):
    pass


class MissingDependency(OptinError):
    pass


class ExportError(OptinError):
    """torch.onnx.export or the ONNX Runtime optimizer failed."""


class EngineBuildError(OptinError):
    """The runtime refused the model (parser or builder errors, listed in the message)."""


class DamagedFile(BadInput):
    """A file the tool reads is truncated, garbage or of another format (optin.files)."""


class DeviceOutOfMemory(OptinError):
    """The GPU ran out of memory; the message names the flag that lowers what one step holds."""
