"""The project's errors: each is a `LgvqError`, a mistake in what the user asked for (a config
key, a file, a prompt) whose message names the thing and how to fix it. The `lgvq` command prints
such a message in one line and exits 2; any other exception is a bug and keeps its traceback.

Each class also derives from the builtin error it refines (ValueError, FileNotFoundError, ...), so
callers that catch those keep working.
"""

from __future__ import annotations

import errno
import re


class LgvqError(Exception):
    """Base of every error the user can fix by changing the request."""


class UsageError(LgvqError, ValueError):
    """A command line that cannot be run as given."""


class ConfigError(LgvqError, ValueError):
    """A config file or override that does not fit the schema."""


class InputFileError(LgvqError, FileNotFoundError):
    """A file or folder the user named is missing, or is not what it should be."""


class MissingWeightsError(LgvqError, FileNotFoundError):
    """Pretrained weights needed by the config are not on this machine."""


class WrongModelKindError(LgvqError, ValueError):
    """A model folder holds another kind of lgvq model than the one asked for."""


class DataError(LgvqError, ValueError):
    """A dataset that cannot be read as configured (missing column, unreadable image in strict mode)."""


class RawDataError(LgvqError, FileNotFoundError):
    """A raw dataset release that is not laid out as its converter expects."""


class StoreError(LgvqError, ValueError):
    """A code store that is missing, incomplete, or from another tokenizer or dataset."""


class PromptError(LgvqError, ValueError):
    """A sampling request that this prior cannot meet."""


class CaptionGrammarError(LgvqError, ValueError):
    """A caption outside the grammar the shapes scorer reads."""


class NotAlignedError(LgvqError, ValueError):
    """A tokenizer without the alignment modules that retrieval and fill-mask need."""


class TrainingDiverged(LgvqError, RuntimeError):
    """A loss became NaN or infinite."""


class OutputWriteError(LgvqError, OSError):
    """An output could not be written (disk full, no permission); what was there before is intact."""


class OutputExistsError(LgvqError, FileExistsError):
    """The output folder already holds results that the command would mix with or replace."""


DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no space, over quota, over the file size limit


def write_errno(e: BaseException) -> int | None:
    """The OS error number of a failed write, also where a library wrapped it in its own error
    (safetensors: "I/O error: ... (os error 28)"; torch.save: "unexpected pos" on a full disk)."""
    if getattr(e, "errno", None) is not None:
        return e.errno
    text = str(e)
    if found := re.search(r"os error (\d+)", text):
        return int(found.group(1))
    if "unexpected pos" in text or "file write failed" in text:
        return errno.ENOSPC
    return None


def describe_write_error(e: BaseException) -> str:
    """A failed write in words: disk full, no permission, or the error itself."""
    code = write_errno(e)
    if code in DISK_FULL:
        return "the disk is full or the file size limit was reached"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "no permission to write there"
    return f"{type(e).__name__}: {e}"
