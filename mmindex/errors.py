"""Typed errors. The library raises these; only the CLI turns them into messages and exit codes."""


class MmindexError(Exception):
    """Base of every error mmindex raises on purpose. Its message is meant for a person."""

    exit_code = 1


class UserInputError(MmindexError):
    """A value, path or file the user gave is unusable; the message says which and what to do."""

    exit_code = 2


class ModelError(MmindexError):
    """A model cannot be built or its weights cannot be had."""

    exit_code = 3


class ModelMismatchError(ModelError):
    """An index was written with one model and is being used with another."""


class IndexFormatError(MmindexError):
    """An index directory is missing, damaged, or written by an unknown format version."""

    exit_code = 4


class MissingFileError(IndexFormatError):
    """A file the manifest names is gone: damage, or a commit that landed while reading."""


class SourceFileChangedError(MmindexError):
    """The file at an indexed path is no longer the file that was indexed (edited, replaced,
    a re-pointed symlink); re-ingesting indexes what is there now."""


class IndexWriteError(MmindexError):
    """A commit could not be written (disk full, permissions); the previous generation stands."""


class IndexNotWritableError(IndexWriteError):
    """The index directory cannot be written at all (read-only file system, permissions):
    nothing was started. Reading it (search, info, doctor) still works."""

    exit_code = 7


class IndexLockedError(MmindexError):
    """Another writer holds the index lock."""

    exit_code = 5


class MmindexWarning(UserWarning):
    """Something a person should know that does not stop the work (e.g. a fallback model)."""


class ClusterError(MmindexError):
    """A Ray cluster cannot be started or joined."""

    exit_code = 6
