"""Typed errors. Library code raises these; only the command layer turns them into one line."""


class CrepsError(Exception):
    """Base of every error this toolkit raises on purpose."""


class CheckpointError(CrepsError):
    """A checkpoint is missing, corrupt, unsafe or of an unsupported configuration."""


class BundleError(CrepsError):
    """A bundle is missing, corrupt, of another format version, or does not match its manifest."""


class ExportError(CrepsError):
    """An export cannot be made (bad request, unsupported model) or does not match PyTorch."""
