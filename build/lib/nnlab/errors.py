"""The one exception type that means "the user gave us something wrong".

The CLI turns an `NnlabError` into a single line on stderr and a non-zero exit code; any
other exception is a bug in nnlab and keeps its traceback.
"""


class NnlabError(Exception):
    """A user mistake (bad file, unknown option, missing run folder): one clear line."""
