"""The one exception type that means "the user gave us something wrong".

The CLI turns an `NnlabError` into a single line on stderr and a non-zero exit code; any
other exception is a bug in nnlab and keeps its traceback.
"""


class NnlabError(Exception):
    """A user mistake (bad file, unknown option, missing run folder): one clear line."""


def short(text: object, limit: int = 120) -> str:
    """`text` on one line, at most `limit` characters: user data quoted in an error (a line of
    a file, a field, an exception's message) must not flood the terminal (a 50 MB line did)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class TooLarge(NnlabError):
    """A request over one of the server's size limits (HTTP 413): the client's mistake too."""
