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
