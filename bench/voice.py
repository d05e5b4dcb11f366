"""Voice benchmark: synthetic speech through the real listener, numbers instead of assertions.

Synthesises commands and ordinary sentences at bench time with espeak-ng and flite (several
voices and speeds, resampled to 16 kHz mono PCM16 with sox) into a temporary folder, then runs
every utterance through :class:`voice.speech.pipeline.Listener` over the default engine the way the
server does: one recognition stream per session (here, one per voice), audio in 20 ms chunks with
silence before and after, then ``end()`` as a client's ``VOICE_AUDIO_END``. The final transcript
goes through :func:`voice.speech.intents.parse_command`.

Measured, against the targets of the voice issue:

* commands: the right intent with exactly the right parameters;
* non-commands: how many become a trade (``EXECUTE_TRADE``); any other intent is harmless;
* real-time factor: this process's CPU time in ``feed``/``end`` over the seconds of audio;
* final latency: from the end of speech (the last audible 10 ms of the synthesised audio) to the
  final. Audio arrives in real time, a chunk every 20 ms; the listener takes a chunk when it has
  arrived and the previous call has returned, so a slow call delays the ones after it.

Voices are split: the "tune" voices are the ones the grammar and engine were tuned on, the
"held-out" voices were not looked at while tuning and are reported separately. Prints Markdown.

    .venv/bin/python bench/voice.py            # the full run
    .venv/bin/python bench/voice.py --quick    # fewer voices and sentences
    .venv/bin/python bench/voice.py --jobs 2   # sessions in parallel (timings less meaningful)
    .venv/bin/python bench/voice.py --cold     # each utterance opens its own session: how a
                                               # session's first command fares
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from voice.speech.engines import BYTES_PER_SECOND  # noqa: E402
from voice.speech.intents import parse_command  # noqa: E402
from voice.speech.pipeline import Final, Interim, Listener  # noqa: E402
from voice.speech.recogniser import default_engine  # noqa: E402

CHUNK_BYTES = 640  # 20 ms, as a browser's audio worklet sends it
LEAD_SILENCE = 0.3
TRAIL_SILENCE = 0.8
SESSION_GAP = 0.5  # extra silence between two utterances of a session

TARGET_COMMANDS = 0.95
TARGET_FALSE_TRADES = 0.10
TARGET_RTF = 0.2
TARGET_LATENCY = 0.4

# Commands as a user would say them: every intent, several phrasings each. The expected result is
# the parser's reading of the text itself, so the bench measures hearing, not parsing.
COMMANDS = [
    "buy two sol",
    "buy one point five sol",
    "buy zero point five sol",
    "buy twenty five sol",
    "please buy three sol",
    "buy a hundred sol",
    "buy seven point two five sol",
    "sell all",
    "sell half",
    "sell everything",
    "sell half of my tokens",
    "sell a quarter",
    "sell one thousand tokens",
    "sell two hundred fifty tokens",
    "what is the price",
    "what's the market cap",
    "show me the volume",
    "tell me the price",
    "launch a token called rocket",
    "create a new coin named moon",
    "join environment alpha",
    "join the demo room",
    "join room gamma",
    "say hello everyone",
    "chat good morning",
    "check my rewards",
    "what are my rewards",
    "claim my rewards",
]

# Ordinary speech, some of it close to a command on purpose (numbers, "by", "cell", "so").
NON_COMMANDS = [
    "the weather is nice today",
    "i bought two apples yesterday",
    "my cell phone battery is dead",
    "so what do you think about that",
    "we drove by the old school",
    "it costs about fifty dollars",
    "i will be there in ten minutes",
    "can you hear me now",
    "this is going to be fun",
    "let me think about it",
    "she sold her car last week",
    "the meeting is at three thirty",
    "turn the music down a little",
    "where did you put my keys",
    "good night and sleep well",
    "i love this song",
    "the cat is sleeping on the couch",
    "buy the way i forgot",
    "bye for now see you later",
    "solar panels are getting cheaper",
    "so long and thanks for all the fish",
    "the cell membrane is thin",
    "two plus two is four",
    "i need a cup of coffee",
    "they sell fresh bread on sunday",
    "what time is it",
    "open the window please",
    "nobody knows the answer",
    "my brother lives in chicago",
    "read me a story",
    "the price of milk went up",
    "one two three testing",
    "we should go home soon",
    "by the river there is a tree",
    "half of them never came back",
    "call me when you get this",
]


@dataclass(frozen=True)
class Voice:
    name: str
    tool: str  # "espeak" or "flite"
    voice: str
    speed: float  # words per minute (espeak) or duration stretch (flite)
    held_out: bool

    def command(self, text: str, wav: Path) -> list[str]:
        if self.tool == "espeak":
            return ["espeak-ng", "-v", self.voice, "-s", str(int(self.speed)), "-w", str(wav), text]
        stretch = f"duration_stretch={self.speed}"
        return ["flite", "-voice", self.voice, "--setf", stretch, "-t", text, "-o", str(wav)]


VOICES = [
    # Tuned on.
    Voice("espeak en-us 150", "espeak", "en-us", 150, False),
    Voice("espeak en-us 175", "espeak", "en-us", 175, False),
    Voice("espeak en-gb 175", "espeak", "en-gb", 175, False),
    Voice("espeak en-us+f3 165", "espeak", "en-us+f3", 165, False),
    Voice("flite slt 1.0", "flite", "slt", 1.0, False),
    Voice("flite kal16 1.0", "flite", "kal16", 1.0, False),
    Voice("flite rms 1.0", "flite", "rms", 1.0, False),
    # Held out: never looked at while tuning.
    Voice("espeak en-us 200", "espeak", "en-us", 200, True),
    Voice("espeak en-gb-x-rp+m3 160", "espeak", "en-gb-x-rp+m3", 160, True),
    Voice("espeak en-us+f2 185", "espeak", "en-us+f2", 185, True),
    Voice("flite awb 1.0", "flite", "awb", 1.0, True),
    Voice("flite slt 1.1", "flite", "slt", 1.1, True),
    Voice("flite rms 0.9", "flite", "rms", 0.9, True),
]
QUICK_VOICES = {"espeak en-us 175", "flite slt 1.0", "espeak en-us 200", "flite awb 1.0"}
NON_COMMAND_VOICES = 4  # each sentence is spoken by this many voices, in rotation


@dataclass
class Utterance:
    text: str
    voice: Voice
    command: bool
    pcm: bytes = b""
    speech_end: float = 0.0  # seconds into pcm of the last audible sound


@dataclass
class Outcome:
    utterance: Utterance
    heard: str
    intent: str
    parameters: dict[str, str | bool]
    confidence: float
    right: bool
    finals: int  # non-empty finals (more than one: the listener split the utterance)
    interims: int
    latency: float
    cpu: float
    audio: float  # seconds fed, silence included
    decoded: float  # seconds the listener passed to the recogniser
    reason: str


@dataclass
class Session:
    voice: Voice
    end_silence: float | None = None  # the listener's default unless set
    utterances: list[Utterance] = field(default_factory=list)


def synthesise(utterance: Utterance, folder: Path, index: int) -> None:
    wav = folder / f"u{index}.wav"
    subprocess.run(utterance.voice.command(utterance.text, wav), check=True, capture_output=True)  # noqa: S603
    sox = ["sox", str(wav), "-r", "16000", "-c", "1", "-b", "16", "-e", "signed-integer"]
    raw = subprocess.run([*sox, "-t", "raw", "-"], check=True, capture_output=True).stdout  # noqa: S603
    wav.unlink()
    utterance.pcm = raw
    utterance.speech_end = speech_end(raw)


def speech_end(pcm: bytes) -> float:
    """Seconds to the end of the last 10 ms frame within 45 dB of the loudest frame."""
    frame = BYTES_PER_SECOND // 100
    levels = []
    for start in range(0, len(pcm) - frame + 1, frame):
        samples = memoryview(pcm[start : start + frame]).cast("h")
        levels.append(math.sqrt(sum(s * s for s in samples) / len(samples)))
    if not levels:
        return 0.0
    floor = max(levels) * 10 ** (-45 / 20)
    last = max((i for i, level in enumerate(levels) if level > floor), default=0)
    return (last + 1) / 100


def silence(seconds: float) -> bytes:
    return bytes(int(seconds * BYTES_PER_SECOND) // 2 * 2)


def run_session(session: Session) -> list[Outcome]:
    stream = default_engine().open()
    if session.end_silence is None:
        listener = Listener(stream)
    else:
        listener = Listener(stream, end_silence=session.end_silence)
    outcomes = []
    for utterance in session.utterances:
        outcomes.append(hear(listener, utterance))
        listener.feed(silence(SESSION_GAP))
    listener.close()
    return outcomes


def hear(listener: Listener, utterance: Utterance) -> Outcome:
    audio = silence(LEAD_SILENCE) + utterance.pcm + silence(TRAIL_SILENCE)
    spoken_until = LEAD_SILENCE + utterance.speech_end
    finals: list[Final] = []
    decoded = 0.0
    interims = 0
    cpu = 0.0
    latency = math.nan
    clock = 0.0  # seconds into the audio when the listener returned from its last call
    for start in range(0, len(audio), CHUNK_BYTES):
        chunk = audio[start : start + CHUNK_BYTES]
        before_cpu, before_wall = time.process_time(), time.perf_counter()
        results = listener.feed(chunk)
        wall = time.perf_counter() - before_wall
        cpu += time.process_time() - before_cpu
        clock = max(clock, (start + len(chunk)) / BYTES_PER_SECOND) + wall
        interims += sum(isinstance(r, Interim) for r in results)
        for result in results:
            if isinstance(result, Final):
                decoded += result.seconds
            if isinstance(result, Final) and result.transcript.text:
                finals.append(result)
                latency = max(0.0, clock - spoken_until)
    before_cpu, before_wall = time.process_time(), time.perf_counter()
    results = listener.end()
    wall = time.perf_counter() - before_wall
    cpu += time.process_time() - before_cpu
    clock = max(clock, len(audio) / BYTES_PER_SECOND) + wall
    for result in results:
        if isinstance(result, Final):
            decoded += result.seconds
        if isinstance(result, Final) and result.transcript.text:
            finals.append(result)
            latency = clock - spoken_until
    heard = " ".join(f.transcript.text for f in finals)
    confidence = statistics.fmean(f.transcript.confidence for f in finals) if finals else 0.0
    command = parse_command(heard, heard=min(1.0, max(0.0, confidence)))
    right = False
    if utterance.command:
        expected = parse_command(utterance.text)
        right = (command.intent, command.parameters) == (expected.intent, expected.parameters)
    return Outcome(
        utterance=utterance,
        heard=heard,
        intent=command.intent,
        parameters=command.parameters,
        confidence=command.confidence,
        right=right,
        finals=len(finals),
        interims=interims,
        latency=latency,
        cpu=cpu,
        audio=len(audio) / BYTES_PER_SECOND,
        decoded=decoded,
        reason=finals[-1].reason if finals else "none",
    )


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(v for v in values if not math.isnan(v))
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def mark(ok: bool) -> str:
    return "yes" if ok else "**no**"


def describe(parameters: dict[str, str | bool]) -> str:
    return ", ".join(f"{k}={v}" for k, v in parameters.items())


def report(outcomes: list[Outcome], seconds: float, *, cold: bool = False) -> None:
    commands = [o for o in outcomes if o.utterance.command]
    others = [o for o in outcomes if not o.utterance.command]

    def rate(items: list[Outcome], test: object) -> tuple[int, int, float]:
        hits = sum(1 for o in items if test(o))  # type: ignore[operator]
        return hits, len(items), hits / len(items) if items else math.nan

    right = rate(commands, lambda o: o.right)
    trades = rate(others, lambda o: o.intent == "EXECUTE_TRADE")
    cpu = sum(o.cpu for o in outcomes)
    audio = sum(o.audio for o in outcomes)
    decoded = sum(o.decoded for o in outcomes)
    rtf = cpu / audio
    # The target is about answering commands: a command's final comes after a short silence
    # once its words are complete; anything else waits longer, in case more words follow.
    latencies = [o.latency for o in commands if o.finals]
    p95 = percentile(latencies, 0.95)
    heard_right = [o.latency for o in commands if o.finals and o.right]
    other_latencies = [o.latency for o in others if o.finals]
    how = ", cold: every utterance the first of its session" if cold else ""
    print(f"# Voice benchmark ({default_engine().name}{how})\n")
    print(
        f"{len(commands)} command utterances ({len({o.utterance.text for o in commands})} "
        f"phrasings), {len(others)} non-commands, "
        f"{len({o.utterance.voice for o in outcomes})} voices; "
        f"{audio:.0f} s of audio in {seconds:.0f} s.\n"
    )
    print("| measure | value | target | met |")
    print("| --- | --- | --- | --- |")
    print(
        f"| commands with the right intent and parameters | {right[0]}/{right[1]} = "
        f"{right[2]:.1%} | >= {TARGET_COMMANDS:.0%} | {mark(right[2] >= TARGET_COMMANDS)} |"
    )
    print(
        f"| non-commands turned into a trade | {trades[0]}/{trades[1]} = {trades[2]:.1%} | "
        f"<= {TARGET_FALSE_TRADES:.0%} | {mark(trades[2] <= TARGET_FALSE_TRADES)} |"
    )
    print(
        f"| real-time factor (CPU / all audio fed) | {rtf:.3f} | <= {TARGET_RTF} | "
        f"{mark(rtf <= TARGET_RTF)} |"
    )
    print(
        f"| real-time factor (CPU / speech decoded) | {cpu / max(decoded, 1e-9):.3f} | "
        f"<= {TARGET_RTF} | {mark(cpu / max(decoded, 1e-9) <= TARGET_RTF)} |"
    )
    print(
        f"| command's final after end of speech, p50 / p95 / max | "
        f"{percentile(latencies, 0.5) * 1000:.0f} / {p95 * 1000:.0f} / "
        f"{max(latencies) * 1000:.0f} ms | p95 <= {TARGET_LATENCY * 1000:.0f} ms | "
        f"{mark(p95 <= TARGET_LATENCY)} |"
    )
    for label, values in (
        ("commands heard right", heard_right),
        ("non-commands (any final text)", other_latencies),
    ):
        if values:
            print(
                f"| final after end of speech, {label}, p50 / p95 | "
                f"{percentile(values, 0.5) * 1000:.0f} / "
                f"{percentile(values, 0.95) * 1000:.0f} ms | | |"
            )
    held = [o for o in commands if o.utterance.voice.held_out]
    tuned = [o for o in commands if not o.utterance.voice.held_out]
    for label, items in (("tune voices", tuned), ("held-out voices", held)):
        hits = rate(items, lambda o: o.right)
        if items:
            print(f"| commands right, {label} | {hits[0]}/{hits[1]} = {hits[2]:.1%} | | |")
    for label, test in (
        ("held-out", lambda o: o.utterance.voice.held_out),
        ("tune", lambda o: not o.utterance.voice.held_out),
    ):
        items = [o for o in others if test(o)]
        if items:
            hits = rate(items, lambda o: o.intent == "EXECUTE_TRADE")
            print(f"| non-commands to trades, {label} voices | {hits[0]}/{hits[1]} | | |")
    split = sum(1 for o in outcomes if o.finals > 1)
    empty = sum(1 for o in outcomes if o.finals == 0)
    by_end = sum(1 for o in outcomes if o.reason == "end")
    with_interims = sum(1 for o in outcomes if o.interims)
    print(f"| utterances split into several finals | {split}/{len(outcomes)} | | |")
    print(f"| utterances with no final text | {empty}/{len(outcomes)} | | |")
    print(f"| finals from end() rather than silence | {by_end}/{len(outcomes)} | | |")
    print(
        f"| interims: utterances with any / mean per utterance | {with_interims}/{len(outcomes)}"
        f" / {statistics.fmean(o.interims for o in outcomes):.1f} | | |"
    )
    non_intents = Counter(o.intent for o in others)
    print(
        "| non-commands heard as | "
        + ", ".join(f"{k} {v}" for k, v in non_intents.most_common())
        + " | | |"
    )
    conf_right = [o.confidence for o in commands if o.right]
    conf_other = [o.confidence for o in others if o.intent != "UNKNOWN"]
    if conf_right and conf_other:
        print(
            f"| median confidence: right commands / non-commands not UNKNOWN | "
            f"{statistics.median(conf_right):.2f} / {statistics.median(conf_other):.2f} | | |"
        )

    print("\n## By voice\n")
    print("| voice | set | commands right | non-commands to trades | RTF | latency p95 |")
    print("| --- | --- | --- | --- | --- | --- |")
    by_voice: dict[Voice, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_voice[o.utterance.voice].append(o)
    for voice in VOICES:
        items = by_voice.get(voice)
        if not items:
            continue
        c = rate([o for o in items if o.utterance.command], lambda o: o.right)
        t = rate(
            [o for o in items if not o.utterance.command], lambda o: o.intent == "EXECUTE_TRADE"
        )
        v_rtf = sum(o.cpu for o in items) / sum(o.audio for o in items)
        v_p95 = percentile(
            [o.latency for o in items if o.finals and o.utterance.command] or [math.nan], 0.95
        )
        print(
            f"| {voice.name} | {'held-out' if voice.held_out else 'tune'} | {c[0]}/{c[1]} | "
            f"{t[0]}/{t[1]} | {v_rtf:.3f} | {v_p95 * 1000:.0f} ms |"
        )

    print("\n## By phrasing (commands)\n")
    print("| phrasing | right |")
    print("| --- | --- |")
    by_text: dict[str, list[Outcome]] = defaultdict(list)
    for o in commands:
        by_text[o.utterance.text].append(o)
    for text, items in by_text.items():
        print(f"| {text} | {sum(o.right for o in items)}/{len(items)} |")

    print("\n## Misrecognised commands\n")
    print("| voice | said | heard | intent | parameters |")
    print("| --- | --- | --- | --- | --- |")
    for o in commands:
        if not o.right:
            print(
                f"| {o.utterance.voice.name} | {o.utterance.text} | {o.heard} | {o.intent} | "
                f"{describe(o.parameters)} |"
            )
    print("\n## Non-commands turned into trades\n")
    print("| voice | said | heard | parameters |")
    print("| --- | --- | --- | --- |")
    for o in others:
        if o.intent == "EXECUTE_TRADE":
            print(
                f"| {o.utterance.voice.name} | {o.utterance.text} | {o.heard} | "
                f"{describe(o.parameters)} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer voices and sentences")
    parser.add_argument("--jobs", type=int, default=1, help="sessions decoded in parallel")
    parser.add_argument("--voices", help="only voices whose name contains this")
    parser.add_argument("--held-out", action="store_true", help="only the held-out voices")
    parser.add_argument("--tune", action="store_true", help="only the tune voices")
    parser.add_argument(
        "--end-silence", type=float, help="the listener's end-of-utterance silence (s), to compare"
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="every utterance the first of its own session (a fresh recogniser)",
    )
    args = parser.parse_args()
    for tool in ("espeak-ng", "flite", "sox"):
        if shutil.which(tool) is None:
            sys.exit(f"bench/voice.py needs {tool} (apt-get install espeak-ng flite sox)")

    voices = [v for v in VOICES if not args.quick or v.name in QUICK_VOICES]
    if args.voices:
        voices = [v for v in voices if args.voices in v.name]
    if args.held_out:
        voices = [v for v in voices if v.held_out]
    if args.tune:
        voices = [v for v in voices if not v.held_out]
    non_commands = NON_COMMANDS[::2] if args.quick else NON_COMMANDS
    for text in COMMANDS:
        assert parse_command(text).intent != "UNKNOWN", text
    sessions = {voice: Session(voice, args.end_silence) for voice in voices}
    for text in COMMANDS:
        for voice in voices:
            sessions[voice].utterances.append(Utterance(text, voice, command=True))
    every = max(1, len(voices) // NON_COMMAND_VOICES) if len(voices) > NON_COMMAND_VOICES else 1
    for k, text in enumerate(non_commands):
        for j, voice in enumerate(voices):
            if (j + k) % every == 0:
                sessions[voice].utterances.append(Utterance(text, voice, command=False))

    everything = [u for s in sessions.values() for u in s.utterances]
    with (
        tempfile.TemporaryDirectory(prefix="funpump-voice-bench-") as folder,
        ThreadPoolExecutor(max_workers=4) as pool,
    ):
        indices = range(len(everything))
        list(pool.map(synthesise, everything, [Path(folder)] * len(everything), indices))
    runs = list(sessions.values())
    if args.cold:
        runs = [Session(u.voice, args.end_silence, [u]) for u in everything]
    default_engine().open().close()  # load the model once before measuring
    started = time.perf_counter()
    if args.jobs > 1:
        with multiprocessing.get_context("fork").Pool(args.jobs) as workers:
            per_session = workers.map(run_session, runs, chunksize=1)
    else:
        per_session = [run_session(s) for s in runs]
    outcomes = [o for outcomes in per_session for o in outcomes]
    report(outcomes, time.perf_counter() - started, cold=args.cold)


if __name__ == "__main__":
    main()
