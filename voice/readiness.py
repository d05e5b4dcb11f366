"""Whether this process makes the speech recogniser ready at startup (``python -m funpump.serve``).

The recogniser itself, and how it is made ready without holding up the event loop, is
:mod:`voice.speech.recogniser`; this module only reads the settings that decide whether a web
process carries it at all.
"""

from __future__ import annotations

from django.conf import settings

from voice.speech.recogniser import recogniser


def preload() -> None:
    """Start making the recogniser ready now, unless ``FUNPUMP_VOICE_PRELOAD`` is off (then the
    first voice session starts it) or speech runs in a worker (``FUNPUMP_SPEECH=worker``: this
    process never loads the models)."""
    if settings.FUNPUMP_VOICE_PRELOAD and settings.FUNPUMP_SPEECH == "inline":
        recogniser.start()
