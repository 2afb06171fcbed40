"""The errors a user can fix, and the warning a user should read: the base classes, stated once.

``larr`` (``larr.cli.main``) catches :class:`UserError` and nothing else: it prints ``larr <command>:
<message>`` on one line and exits 2 (``larr --debug <command>`` shows the traceback). Any other exception is
a bug and keeps its traceback. So a message must stand alone: name the file, line, key or flag, and say what
to run or change.

* :class:`DataValidationError` — a dataset file breaks the schema (``larr.data.schema``);
* :class:`ConfigError` — a training config key, value or ``--set`` override is wrong (``larr.training.config``);
* :class:`UsageError` — a command-line flag's value is wrong in a way argparse cannot see (``--where nosuch=1``);
* :class:`MissingInputError` — what an earlier step writes is not there (no dataset before ``larr data synth``,
  no stage-1 model before ``larr train embed``, no checkpoints before ``larr export``).

Other layers derive their own user errors from these (``larr.export.repository.RepositoryError``,
``larr.export.scene_table.SceneTableError``). Each also derives from the built-in it used to be (``ValueError``,
``FileNotFoundError``, ``RuntimeError``), so callers that caught those still do.

Layer 1: imports nothing of larr.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's data, config, flags or order of steps; the message says how to fix it."""


class DataValidationError(UserError, ValueError):
    """A dataset file breaks the schema; the message names file, line and column."""


class ConfigError(UserError, ValueError):
    """A training config key or value is wrong; the message names the dotted key (``ctr.max_epochs``)."""


class UsageError(UserError, ValueError):
    """A command-line flag's value is wrong (beyond what argparse checks); the message names the flag."""


class MissingInputError(UserError, FileNotFoundError):
    """An input an earlier step writes (a dataset, a stage's model, a run folder) is missing."""


class DataWarning(UserWarning):
    """Something in a dataset is probably not what the user meant, but loading goes on (e.g. an undeclared column)."""
