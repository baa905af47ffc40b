"""Exception hierarchy.

Every cortexlink error derives from :class:`CortexlinkError` and also from the
builtin exception a caller would naturally catch, so ``except ValueError`` keeps
working for code that does not know about cortexlink.
"""


class CortexlinkError(Exception):
    """Base class of every error raised by cortexlink."""


class ConfigError(CortexlinkError, ValueError):
    """A configuration or constructor parameter is invalid."""


class ValidationError(CortexlinkError, ValueError):
    """Input data (dtype, shape, channel count, values) do not match what is expected."""


class NotFittedError(CortexlinkError, AttributeError):
    """An estimator or processor was used before it was fitted or calibrated.

    Also inherits ``AttributeError`` as scikit-learn's own ``NotFittedError`` does.
    """


class DeviceDisconnected(CortexlinkError, ConnectionError):
    """A data source stopped delivering data."""


class DeadlineMissed(CortexlinkError, TimeoutError):
    """A real-time stage did not finish within its deadline."""


class GapError(CortexlinkError, ValueError):
    """A discontinuity in ``start_sample`` was found and the policy is ``"raise"``."""
