"""Run code blocks, each in its own process forked from one interpreter that has imported the frameworks.

Started as ``python tests/_blockrunner.py``; reads one JSON request per line (``{"code": ..., "cwd": ...}``) and
answers one JSON line (``{"returncode": ..., "stdout": ..., "stderr": ...}``). Each block runs in a fresh child
process with a fresh ``__main__`` module, as ``python -c`` would; only the third-party imports below are already
done (no framework is initialized before the fork: JAX has no backend, torch no thread pool). The default suite
uses it to spare every README block ~5 s of importing; ``-m slow`` runs the same blocks with ``python -c``.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import tempfile
import traceback
import types

PRELOAD = ("numpy", "rich", "jax", "jax.numpy", "optax", "flax.linen", "flax.nnx", "equinox", "torch", "torch._dynamo")
TIMEOUT_S = 300


def _child(code: str, cwd: str, out: int, err: int) -> None:
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.chdir(cwd)
    signal.alarm(TIMEOUT_S)
    main = types.ModuleType("__main__")
    sys.modules["__main__"] = main
    sys.argv = ["-c"]
    rc = 0
    try:
        exec(compile(code, "<string>", "exec"), main.__dict__)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
        rc = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


def serve() -> None:
    sys.path[0] = ""  # as `python -c`: the working directory, not this file's folder (tests/torch is no torch)
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    for line in sys.stdin:
        request = json.loads(line)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(request["code"], request["cwd"], out.fileno(), err.fileno())
            _, status = os.waitpid(pid, 0)
            texts = []
            for f in (out, err):
                f.seek(0)
                texts.append(f.read().decode(errors="replace"))
        rc = os.waitstatus_to_exitcode(status)
        sys.stdout.write(json.dumps({"returncode": rc, "stdout": texts[0], "stderr": texts[1]}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
