"""This process's speech recogniser, made ready once and never on the event loop's time.

The recogniser's neural model (Moonshine, ``voice/speech/moonshine.py``) is rebuilt for the
machine's ONNX Runtime once and cached (``make voice-model``). The rebuild is 15-20 s of CPU,
much of it Python or native code that holds the GIL (``import onnx`` alone holds it for over a
second); run inside a server process, even on a worker thread, it kept the event loop from
answering for seconds at a time. Loading the cached model takes about 2 s without ``onnx``, and
ONNX Runtime lets the loop run meanwhile. So:

* :meth:`Recogniser.start` prepares the recogniser on a background thread. A missing cache is
  built by a child process (``python -m voice.speech.moonshine --background``, at a lower CPU
  priority), which shares no GIL with the server; the thread then loads the model and the
  command grammar.
  ``python -m funpump.serve`` starts it at startup (``voice.readiness.preload``); a process
  that did not (or with ``FUNPUMP_VOICE_PRELOAD`` off) starts with its first voice session.
* Until :meth:`Recogniser.ready`, voice sessions are refused with ``RATE_LIMITED`` and a
  ``retryAfterMs`` (``voice.session.require_recogniser``): every other message is served as
  usual.
* If the model cannot be made ready, that is logged and recognition goes on with pocketsphinx
  alone, as where Moonshine is not installed: voice is never refused for good.
"""

from __future__ import annotations

import enum
import functools
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from voice.speech import engines, moonshine
from voice.speech.engines import Engine, RescoredEngine, SphinxEngine

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]  # where ``python -m voice.speech.moonshine`` is found
BUILD_TIMEOUT = 900.0  # seconds; the build takes 15-20 s on one core of a small machine


class Phase(enum.Enum):
    IDLE = "idle"  # nothing asked for it yet
    BUILDING = "building"  # a child process rebuilds the model's cache
    LOADING = "loading"  # this process reads the cached model
    READY = "ready"  # Moonshine and pocketsphinx are ready
    FAILED = "failed"  # Moonshine could not be made ready: pocketsphinx alone

    @property
    def retry_after_ms(self) -> int:
        """How long a refused client should wait before asking again."""
        return 5000 if self is Phase.BUILDING else 1000


class Recogniser:
    """The readiness of this process's recogniser; ``prepare`` does the work on a thread, moving
    ``phase`` along as it goes."""

    def __init__(self, prepare: Callable[[Recogniser], None] | None = None) -> None:
        self.prepare = prepare or prepare_models
        self.phase = Phase.IDLE
        self._lock = threading.Lock()
        self._done = threading.Event()

    def start(self) -> None:
        """Make the recogniser ready on a background thread; at most once."""
        with self._lock:
            if self.phase is not Phase.IDLE:
                return
            self.phase = Phase.LOADING
        threading.Thread(target=self._run, name="voice-readiness", daemon=True).start()

    def ready(self) -> bool:
        """Whether recognition can run now (with Moonshine, or pocketsphinx alone if it
        failed). Starts making it ready if nothing has."""
        self.start()
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Start making the recogniser ready and wait for it: for processes with nothing else
        to do meanwhile (the voice agent, tests)."""
        self.start()
        return self._done.wait(timeout)

    def failed(self) -> bool:
        """Whether Moonshine could not be made ready, so finals come from pocketsphinx alone."""
        return self.phase is Phase.FAILED

    def _run(self) -> None:
        started = time.monotonic()
        try:
            self.prepare(self)
        except Exception:
            self.phase = Phase.FAILED
            logger.exception("the speech model could not be made ready: pocketsphinx alone")
        else:
            self.phase = Phase.READY
            logger.info("speech recognition ready in %.1f s", time.monotonic() - started)
        finally:
            self._done.set()


def prepare_models(recogniser: Recogniser) -> None:
    """Moonshine's model (built by a child process if its cache is missing, then loaded) and
    pocketsphinx's dictionary."""
    if moonshine.available():
        if not moonshine.is_prepared():
            recogniser.phase = Phase.BUILDING
            _build()
            recogniser.phase = Phase.LOADING
        moonshine.load()
        moonshine.command_grammar()
    engines.warm_up()


def _build() -> None:
    """Rebuild the model's cache in a child process (see the module's docstring)."""
    logger.info("building the speech model's cache (make voice-model does this ahead of time)")
    command = [sys.executable, "-m", "voice.speech.moonshine", "--background"]
    result = subprocess.run(  # noqa: S603 - this interpreter and a fixed module
        command, cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"python -m voice.speech.moonshine exited with {result.returncode}: "
            f"{result.stderr[-2000:]}"
        )


recogniser = Recogniser()  # the process's own


@functools.cache
def default_engine() -> Engine:
    """The process's engine: pocketsphinx rescored by Moonshine, both offline; pocketsphinx
    alone where Moonshine's package is not installed (it ships for x86-64 only) or its model
    could not be made ready (:data:`recogniser`)."""
    if moonshine.available() and not recogniser.failed():
        return RescoredEngine()
    logger.warning("Moonshine is not available: voice finals come from pocketsphinx alone")
    return SphinxEngine()
