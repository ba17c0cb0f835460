"""Typed errors. Library code raises these; only the command layer turns them into one line."""


class CrepsError(Exception):
    """Base of every error this toolkit raises on purpose."""


class CheckpointError(CrepsError):
    """A checkpoint is missing, corrupt, unsafe or of an unsupported configuration."""


class BundleError(CrepsError):
    """A bundle is missing, corrupt, of another format version, or does not match its manifest."""


class ExportError(CrepsError):
    """An export cannot be made (bad request, unsupported model) or does not match PyTorch."""


class NonFiniteError(CrepsError):
    """A model or graph gave NaN or Inf where an image needs finite numbers (bad weights, an overflow)."""


def install_hint(extra: str) -> str:
    """How to get an extra's packages: creps is installed from a checkout, not from PyPI.

    `extra` is a name in pyproject.toml's optional-dependencies (export, train, ort, trt...).
    The one place that spells the command, so every 'needs X' message gives the same one.
    """
    torch_first = "pip install torch==2.13.0 && " if extra in ("torch", "export", "train", "bench", "test") else ""
    return f"{torch_first}pip install -e '.[{extra}]' in the creps checkout"


class MissingDependency(CrepsError):
    """A command or backend needs a package this environment does not have."""

    def __init__(self, purpose: str, modules: list[str] | tuple[str, ...], extra: str):
        self.modules = list(modules)
        self.extra = extra
        super().__init__(f"{purpose} needs {', '.join(self.modules)}, not installed here: {install_hint(extra)}")
