"""Errors the agent reports back to the conductor.

Each carries a short ``code`` that the conductor stores with the failed
operation, so a tenant sees why, not a stack trace.
"""


class AgentError(Exception):
    code = "agent_error"

    def __init__(self, message=None, **kwargs):
        self.kwargs = kwargs
        # The class's docstring without the line its closing quotes are on.
        doc = (self.__class__.__doc__ or '').rstrip()
        super().__init__(message or doc or self.code)


class PathNotAllowed(AgentError):
    """A path lies outside the agent's configured image directories."""
    code = "path_not_allowed"


class InvalidRequest(AgentError):
    """A task payload failed validation."""
    code = "invalid_request"


class ImageError(AgentError):
    """qemu-img failed."""
    code = "image_error"


class ImageInUse(AgentError):
    """The image is held open by a running QEMU process."""
    code = "image_in_use"


class NoSpace(AgentError):
    """Not enough free space in an image directory."""
    code = "no_space"


class Cancelled(AgentError):
    """An administrator cancelled the operation; nothing was changed."""
    code = "cancelled"


class QMPError(AgentError):
    """The QEMU monitor refused a command or could not be reached."""
    code = "qmp_error"


class PauseDeadlineExceeded(AgentError):
    """The backend stayed paused longer than the configured deadline."""
    code = "pause_deadline_exceeded"


class ResumeFailed(AgentError):
    """The backend could not be resumed even after retries."""
    code = "resume_failed"


class ServerRunning(AgentError):
    """The operation needs the server shut off, but its QEMU is running."""
    code = "server_running"


class JournalUnavailable(AgentError):
    """The agent cannot write its journal (a full or failing disk); it
    refuses new work until it can, since it could not recover it.
    """
    code = "journal_unavailable"


class QuiesceFailed(AgentError):
    """``quiesce=required`` and the guest's filesystems could not be
    frozen (no guest agent, no answer within the deadline, an error).
    """
    code = "quiesce_failed"


class NotSupported(AgentError):
    """The agent's driver cannot do what the task asks."""
    code = "not_supported"
