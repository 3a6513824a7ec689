"""The loader's own exception types.

Every failure the loader can meet (bad input, kernel refusal) is one of these,
so callers can catch ``LoaderError`` and print ``str(e)``: a sentence a person
can act on, never a traceback.
"""


class LoaderError(Exception):
    """Base of every error the loader raises on purpose."""


class ElfError(LoaderError):
    """The file is not a usable BPF ELF object (truncated, corrupt, wrong machine)."""


class BtfError(LoaderError):
    """BTF or .BTF.ext data is malformed or refers to things that do not exist."""


class CoreError(LoaderError):
    """A CO-RE relocation cannot be resolved and must not be poisoned."""


class RelocationError(LoaderError):
    """An ELF relocation refers to a symbol or section the loader cannot place."""


class SyscallError(LoaderError):
    """A bpf()/perf_event_open()/ioctl() call failed.

    ``command`` names the call (``BPF_MAP_CREATE``), ``errno`` the error and
    ``hint`` what usually causes it.
    """

    def __init__(self, command, errno, message, hint=""):
        self.command = command
        self.errno = errno
        self.hint = hint
        text = f"{command} failed: {message}"
        if hint:
            text += f" ({hint})"
        super().__init__(text)


class PermissionDenied(SyscallError):
    """EPERM/EACCES: usually missing root or CAP_BPF + CAP_PERFMON."""


class NotSupported(SyscallError):
    """EINVAL/E2BIG/EOPNOTSUPP on something this kernel does not offer."""


class VerifierError(LoaderError):
    """The verifier rejected a program; ``log`` holds its full output."""

    def __init__(self, program, message, log="", source_line=None):
        self.program = program
        self.log = log
        self.source_line = source_line
        super().__init__(message)


class AttachError(LoaderError):
    """A program loaded but could not be attached to its hook."""
