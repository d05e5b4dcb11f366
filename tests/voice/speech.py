"""Speech for tests, synthesised at test time (espeak-ng or flite, then sox to 16 kHz PCM16)."""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.conftest import require


def require_speech_tools() -> None:
    missing = [tool for tool in ("espeak-ng", "flite", "sox") if shutil.which(tool) is None]
    require(not missing, f"needs {', '.join(missing)} (apt-get install espeak-ng flite sox)")


@functools.cache
def speak(text: str, voice: str = "en-us", engine: str = "espeak", speed: int = 165) -> bytes:
    """``text`` spoken as 16 kHz mono signed 16-bit little-endian PCM."""
    require_speech_tools()
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "speech.wav"
        if engine == "espeak":
            command = ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text]
        else:
            command = ["flite", "-voice", voice, "-t", text, "-o", str(wav)]
        subprocess.run(command, check=True, capture_output=True)
        convert = ["sox", str(wav), "-r", "16000", "-c", "1", "-b", "16", "-e", "signed-integer"]
        result = subprocess.run([*convert, "-t", "raw", "-"], check=True, capture_output=True)
    return result.stdout


def silence(seconds: float) -> bytes:
    return bytes(int(16_000 * seconds) * 2)


def chunks(pcm: bytes, size: int = 3200) -> list[bytes]:
    """Audio cut into frames as a client would send them (100 ms each by default)."""
    return [pcm[start : start + size] for start in range(0, len(pcm), size)]
