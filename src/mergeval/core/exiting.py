"""How a command ends: as Python would, less its teardown.

    exit_without_teardown(code)     # cli/main.py's `mergeval`, the benchmark's direct loop
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def exit_without_teardown(code: int | str | None) -> NoReturn:
    """Exit as Python would, less its teardown.

    With torch and transformers imported, freeing every module after the last atexit handler
    took 1.2–1.5 s on every command, after its work and its output were done. What an exit must
    do still runs, in the interpreter's own order: non-daemon threads are joined (and thread
    pools told to stop), atexit handlers run (logging's flush, Prefect's event flush, weakref
    finalizers such as temporary folders'), the standard streams are flushed. `code` is
    SystemExit's: None, a status, or a message for stderr (status 1).
    """
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    threading._shutdown()  # what Py_FinalizeEx calls first; no public name in 3.11–3.13
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away (`| head`): nothing to say it to
            pass
    os._exit(code or 0)
