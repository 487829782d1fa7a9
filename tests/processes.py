"""Reading other processes from the tests without tripping over ones that have just ended."""

import psutil


def command_line(process: psutil.Process) -> str:
    """The process's command line, or "" for one that has exited (an unreaped zombie has none)."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""
