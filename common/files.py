"""Files replaced whole or not at all: written under a temporary name beside the target, synced, renamed.

A crash, a Ctrl-C or a full disk part-way through leaves the old file as it was and no temporary file
behind (a checkpoint is hundreds of MB: a stray one would hold the space the next try needs). Standard
library only.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from common.errors import UserError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(UserError):
    """A write ran out of space; the message says which folder and what to do."""


@contextmanager
def atomic_write(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write; when the block ends it becomes `path`. On any failure `path` is unchanged,
    the temporary file is removed, and a full disk becomes a DiskFullError that says what to do."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        full = disk_full_error(error)
        if full is not None:
            raise DiskFullError(disk_full_message(path, full)) from error
        raise


def write_json(path: Path, data: Any) -> None:
    """`data` as indented JSON (what JSON lacks, such as a Path, as its text), replaced whole: a reader, or a
    report rewritten as a run goes on, never shows half a file. The folder is made if it is missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write((json.dumps(data, indent=2, default=str) + "\n").encode())


def disk_full_error(error: BaseException | None) -> OSError | None:
    """The "no space left" OSError behind `error`, if any. torch.save reports a write that fails part-way
    as the RuntimeError of its clean-up, with the OSError only as that error's context."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno in DISK_FULL:
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def disk_full_message(path: Path, error: OSError) -> str:
    folder = path.parent
    return (
        f"the disk holding {folder} is full ({error.strerror}): {path.name} was not written, and the one "
        f"from before, if any, is unchanged. Free some space there (`df -h {folder}` shows what is left) "
        "and run the command again; `alexnet train --resume` continues from the last checkpoint"
    )
