"""Every error gapless raises on purpose, in one place at the bottom of the import graph.

Two kinds, told apart by what the user can do about them:

- :class:`InputError`: the input is wrong (a file, a flag, a setting). The command line prints the message as one
  line naming the file or key and exits with status 2. :class:`ConfigError`, :class:`SlideError` and
  :class:`MppError` are input errors.
- :class:`RunError`: a run stopped for a reason it can state (the loss diverged, the data went bad, a lock is
  held). Printed as one line too, exit status 1.

Conditions that code handles internally (a region that does not fit a slide, so another location is drawn) derive
from :class:`GaplessError` and never reach the user as such. Anything else that escapes is a bug and keeps its
traceback.
"""

from __future__ import annotations


class GaplessError(Exception):
    """Base of the errors gapless raises on purpose."""


class InputError(GaplessError):
    """Caused by the user's input (a file, a flag, a setting); the message names it. Exit status 2."""


class ConfigError(InputError, ValueError):
    """A configuration value or key is invalid; the message names the key (and the file, when there is one)."""


class SlideError(InputError):
    """A slide cannot be opened or read; the message names the file and the problem."""


class MppError(SlideError):
    """A slide has no usable mpp, or an implausible one; the message names the file."""


class RunError(GaplessError):
    """A run stopped for a reason it reports (diverged, data went bad, folder locked). Exit status 1."""


class NonFiniteLossError(RunError):
    """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


class RegionTooLargeError(GaplessError, ValueError):
    """A tile's footprint does not fit on the slide (an internal condition: the sampler draws elsewhere)."""
