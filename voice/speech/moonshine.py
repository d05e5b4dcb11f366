"""Moonshine base: a neural recogniser for finals, searched within the command grammar.

Moonshine (Moonshine AI, MIT) is an encoder-decoder speech model; its English "base" model ships
inside the ``moonshine-cpp`` package as two ONNX Runtime files (ORT format, weights stored as int8
and widened to floats again at every call, 100 ms per decoder step). The package's own native
library stopped this machine with an illegal instruction, so this module reads the model files
itself: it rebuilds them as ONNX models (:func:`ort_to_onnx`), lets ONNX Runtime fold the weights
once and quantises the matrix products again for its int8 kernels (:func:`prepared`, cached), and
runs them with the ``onnxruntime`` package: 11-14 ms per decoder step. Nothing is downloaded.

Decoding is constrained to the command grammar (``voice/speech/grammar.py``): a beam search over the
model's tokens where the only tokens allowed next are those that continue a path of the grammar
(:class:`TokenGrammar`). Asked to choose among the grammar's sentences, the model is far surer
than pocketsphinx: on the voice bench it picked the right one of the 28 command phrasings for
every one of 364 synthesised commands, where its free transcripts ("By Du Salle" for "buy two
sol") were right for 38%. Within the whole grammar, the grammar's own probabilities weigh in at
``PRIOR`` (a chat message of four free words is less likely than "sell all"); words may be
written in lower case, capitalised or in capitals, and the text may end in a full stop, as the
model writes.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib.util
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from voice.speech.grammar import command_fsg
from voice.speech.search import Hypothesis, Items, TokenGrammar
from voice.speech.tokenizer import Tokenizer, read_vocabulary

START, END = 1, 2  # the decoder's start-of-text and end-of-text tokens
LAYERS, HEADS, HEAD_SIZE = 8, 8, 52
FRAMES_PER_SECOND = 41.5  # the encoder's output frames per second of audio
TOKENS_PER_SECOND = 6.5  # the model's own bound on how much text a second of audio holds
BEAM = 4
PRIOR = 0.5  # weight of the grammar's own probabilities beside the model's
THREADS = 1  # ONNX Runtime threads per call: recognition runs on one core


def available() -> bool:
    """Whether the model's package is installed (found without importing it: its module loads
    its own native libraries, which this process does not use)."""
    return importlib.util.find_spec("moonshine_cpp") is not None


def model_folder() -> Path:
    """Where ``moonshine-cpp`` keeps the English base model."""
    spec = importlib.util.find_spec("moonshine_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the moonshine-cpp package (Moonshine's model files) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / "base-en"


# ORT format to ONNX.


def ort_to_onnx(data: bytes) -> Any:
    """An ONNX ``ModelProto`` with the graph, weights and subgraphs of an ORT-format model."""
    from onnx import helper
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs.InferenceSession import (
        InferenceSession,
    )

    model = InferenceSession.GetRootAsInferenceSession(data, 0).Model()
    opsets = [
        helper.make_opsetid(_text(model.OpsetImport(i).Domain()), model.OpsetImport(i).Version())
        for i in range(model.OpsetImportLength())
    ]
    proto = helper.make_model(_graph(model.Graph(), "main"), opset_imports=opsets)
    proto.ir_version = model.IrVersion()
    return proto


def _text(value: bytes | None) -> str:
    return value.decode() if value else ""


def _tensor(tensor: Any) -> Any:
    from onnx import TensorProto

    proto = TensorProto(name=_text(tensor.Name()), data_type=tensor.DataType())
    proto.dims.extend(tensor.Dims(j) for j in range(tensor.DimsLength()))
    if tensor.StringDataLength():
        proto.string_data.extend(tensor.StringData(j) for j in range(tensor.StringDataLength()))
    elif tensor.RawDataLength():
        proto.raw_data = tensor.RawDataAsNumpy().tobytes()
    return proto


def _value_info(value: Any) -> Any:
    from onnx import helper
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs.TensorTypeAndShape import (
        TensorTypeAndShape,
    )
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs.TypeInfoValue import (
        TypeInfoValue,
    )

    name, info = _text(value.Name()), value.Type()
    if info is None or info.ValueType() != TypeInfoValue.tensor_type:
        return helper.make_empty_tensor_value_info(name)
    table = info.Value()
    tensor_type = TensorTypeAndShape()
    tensor_type.Init(table.Bytes, table.Pos)
    shape = tensor_type.Shape()
    dims: list[int | str | None] | None = None
    if shape is not None:
        dims = []
        for j in range(shape.DimLength()):
            dim = shape.Dim(j).Value()
            kind = dim.DimType() if dim is not None else 0
            dims.append({1: dim.DimValue(), 2: _text(dim.DimParam())}.get(kind) if dim else None)
    return helper.make_tensor_value_info(name, tensor_type.ElemType(), dims)


def _attribute(attribute: Any) -> Any:
    from onnx import AttributeProto

    proto = AttributeProto(name=_text(attribute.Name()), type=attribute.Type())
    kind = attribute.Type()
    if kind == AttributeProto.FLOAT:
        proto.f = attribute.F()
    elif kind == AttributeProto.INT:
        proto.i = attribute.I()
    elif kind == AttributeProto.STRING:
        proto.s = attribute.S()
    elif kind == AttributeProto.TENSOR:
        proto.t.CopyFrom(_tensor(attribute.T()))
    elif kind == AttributeProto.GRAPH:
        proto.g.CopyFrom(_graph(attribute.G(), proto.name))
    elif kind == AttributeProto.FLOATS:
        proto.floats.extend(attribute.Floats(j) for j in range(attribute.FloatsLength()))
    elif kind == AttributeProto.INTS:
        proto.ints.extend(attribute.Ints(j) for j in range(attribute.IntsLength()))
    elif kind == AttributeProto.STRINGS:
        proto.strings.extend(attribute.Strings(j) for j in range(attribute.StringsLength()))
    elif kind == AttributeProto.TENSORS:
        proto.tensors.extend(
            _tensor(attribute.Tensors(j)) for j in range(attribute.TensorsLength())
        )
    elif kind == AttributeProto.GRAPHS:
        proto.graphs.extend(
            _graph(attribute.Graphs(j), proto.name) for j in range(attribute.GraphsLength())
        )
    else:
        raise ValueError(f"attribute {proto.name!r} has a type ONNX cannot hold ({kind})")
    return proto


def _graph(graph: Any, name: str) -> Any:
    from onnx import helper

    values = {
        _text(graph.NodeArgs(j).Name()): graph.NodeArgs(j) for j in range(graph.NodeArgsLength())
    }
    nodes = []
    for j in range(graph.NodesLength()):
        node = graph.Nodes(j)
        proto = helper.make_node(
            _text(node.OpType()),
            [_text(node.Inputs(k)) for k in range(node.InputsLength())],
            [_text(node.Outputs(k)) for k in range(node.OutputsLength())],
            name=_text(node.Name()),
            domain=_text(node.Domain()),
        )
        proto.attribute.extend(
            _attribute(node.Attributes(k)) for k in range(node.AttributesLength())
        )
        nodes.append((node.Index(), proto))
    weights = [_tensor(graph.Initializers(j)) for j in range(graph.InitializersLength())]
    constant = {weight.name for weight in weights}
    inputs = [_text(graph.Inputs(j)) for j in range(graph.InputsLength())]
    return helper.make_graph(
        [proto for _, proto in sorted(nodes, key=lambda item: item[0])],
        name,
        [_value_info(values[n]) for n in inputs if n not in constant],
        [_value_info(values[_text(graph.Outputs(j))]) for j in range(graph.OutputsLength())],
        initializer=weights,
    )


def cache_folder() -> Path:
    """Where the rebuilt models are kept between runs (``FUNPUMP_CACHE``, else the user's cache)."""
    root = os.environ.get("FUNPUMP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "funpump"
    )
    return Path(root) / "moonshine"


MODEL_FILES = ("encoder_model.ort", "decoder_model_merged.ort")


def prepared_path(source: Path) -> Path:
    """Where the rebuilt ``source`` is cached: under a name that changes with the model file and
    the ONNX Runtime version."""
    return cache_folder() / f"{source.stem}-{_digest(source)}.onnx"


@functools.cache
def _digest(source: Path) -> str:
    import onnxruntime

    return hashlib.sha256(source.read_bytes() + onnxruntime.__version__.encode()).hexdigest()[:16]


def is_prepared() -> bool:
    """Whether every model file is rebuilt and cached, so that :func:`load` only reads them."""
    folder = model_folder()
    return all(prepared_path(folder / name).exists() for name in MODEL_FILES)


def prepare() -> None:
    """Rebuild and cache every model file that is not cached yet."""
    folder = model_folder()
    for name in MODEL_FILES:
        prepared(folder / name)


def prepared(source: Path) -> Path:
    """An ORT-format model rebuilt for this process's ONNX Runtime: its weights folded to floats
    and the matrix products quantised to int8 again, dynamically (``quantize_dynamic``), which
    reads a quarter of the memory per decoder step. Built once (about 10 s) and cached
    (:func:`prepared_path`); processes that find it missing at once build it one at a time."""
    target = prepared_path(source)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / "build.lock", "wb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        if not target.exists():  # unless another process built it while this one waited
            _build(source, target)
    return target


def _build(source: Path, target: Path) -> None:
    # Imported here: ``onnx`` holds the GIL for over a second while it loads, and a process
    # that only reads the cached models never needs it.
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        folded = os.path.join(work, "folded.onnx")
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = folded
        onnxruntime.InferenceSession(
            ort_to_onnx(source.read_bytes()).SerializeToString(),
            options,
            providers=["CPUExecutionProvider"],
        )
        quantised = os.path.join(work, "quantised.onnx")
        quantize_dynamic(
            folded,
            quantised,
            op_types_to_quantize=["MatMul"],
            weight_type=QuantType.QInt8,
            extra_options={"EnableSubgraph": True},
        )
        os.replace(quantised, target)  # whole or not at all


# The model.


class Moonshine:
    """The encoder and the decoder, ready to run; one per process, safe to share between threads."""

    def __init__(self, folder: Path | None = None) -> None:
        import onnxruntime

        folder = folder or model_folder()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
        self.encoder, self.decoder = (
            onnxruntime.InferenceSession(
                str(prepared(folder / name)), options, providers=["CPUExecutionProvider"]
            )
            for name in MODEL_FILES
        )
        self.outputs = [output.name for output in self.decoder.get_outputs()]
        self.cache_inputs = [
            entry.name for entry in self.decoder.get_inputs() if entry.name.startswith("past_")
        ]
        self.tokenizer = Tokenizer(read_vocabulary((folder / "tokenizer.bin").read_bytes()))

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """The encoder's view of 16 kHz mono audio (floats in -1..1)."""
        hidden: np.ndarray = self.encoder.run(
            None, {"input_values": audio[None, :].astype(np.float32)}
        )[0]
        return hidden

    def _step(
        self, tokens: np.ndarray, hidden: np.ndarray, past: dict[str, np.ndarray] | None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One decoder step for a batch; returns log-probabilities and the new cache."""
        feeds = {
            "input_ids": tokens,
            "encoder_hidden_states": hidden,
            "use_cache_branch": np.array([past is not None]),
            **self._cache(tokens.shape[0], past),
        }
        outputs = self.decoder.run(None, feeds)
        cache = {
            name.replace("present", "past_key_values"): value
            for name, value in zip(self.outputs[1:], outputs[1:], strict=True)
        }
        if past is not None:  # the cross-attention cache is computed once, on the first step
            cache.update({name: value for name, value in past.items() if ".encoder." in name})
        return _log_softmax(outputs[0][:, -1, :]), cache

    def _cache(self, batch: int, past: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
        """The decoder's cache inputs: ``past``, or empty ones for a first step."""
        if past is not None:
            return {name: past[name] for name in self.cache_inputs}
        return {
            name: np.zeros((batch, HEADS, 0 if ".decoder." in name else 1, HEAD_SIZE), np.float32)
            for name in self.cache_inputs
        }

    def search(
        self, hidden: np.ndarray, grammar: TokenGrammar, *, beam: int = BEAM
    ) -> tuple[list[int], float]:
        """The grammar's best-scoring token sequence for encoded audio, and its log-probability."""
        limit = math.ceil(hidden.shape[1] / FRAMES_PER_SECOND * TOKENS_PER_SECOND) + 4
        live = [Hypothesis(grammar.start)]
        done: list[Hypothesis] = []
        past: dict[str, np.ndarray] | None = None
        last = np.array([[START]], dtype=np.int64)
        for _ in range(limit):
            scores, cache = self._step(last, np.repeat(hidden, len(live), axis=0), past)
            candidates: list[tuple[float, int, int, Items | None]] = []
            for row, hypothesis in enumerate(live):
                following, ends = grammar.successors(hypothesis.items)
                if ends:
                    candidates.append((hypothesis.score + scores[row, END], row, END, None))
                for token, (items, prior) in following.items():
                    score = hypothesis.score + scores[row, token] + prior
                    candidates.append((score, row, token, items))
            candidates.sort(key=lambda candidate: -candidate[0])
            kept: list[tuple[int, Hypothesis]] = []
            for score, row, token, next_items in candidates:
                if next_items is None:
                    done.append(Hypothesis(frozenset(), live[row].tokens, score))
                elif len(kept) < beam:
                    kept.append((row, Hypothesis(next_items, [*live[row].tokens, token], score)))
                if len(kept) == beam and done:
                    break
            best_done = max((h.score for h in done), default=-math.inf)
            kept = [(row, h) for row, h in kept if h.score > best_done]
            if not kept:
                break
            rows = np.array([row for row, _ in kept])
            past = {name: value[rows] for name, value in cache.items()}
            live = [hypothesis for _, hypothesis in kept]
            last = np.array([[h.tokens[-1]] for h in live], dtype=np.int64)
        if not done:
            return [], -math.inf
        best = max(done, key=lambda h: h.score)
        return best.tokens, best.score

    def score(self, hidden: np.ndarray, texts: list[str]) -> list[float]:
        """The log-probability of each text, written as the model writes a sentence (capital
        first letter, full stop), in one batched decoder call."""
        sequences = [
            [START, *self.tokenizer.sentence(text), END] if text else [START, END] for text in texts
        ]
        width = max(len(sequence) for sequence in sequences) - 1
        tokens = np.full((len(sequences), width), END, dtype=np.int64)
        for row, sequence in enumerate(sequences):
            tokens[row, : len(sequence) - 1] = sequence[:-1]
        feeds = {
            "input_ids": tokens,
            "encoder_hidden_states": np.repeat(hidden, len(sequences), axis=0),
            "use_cache_branch": np.array([False]),
            **self._cache(len(sequences), None),
        }
        scores = _log_softmax(self.decoder.run(["logits"], feeds)[0])
        return [
            float(scores[row, np.arange(len(sequence) - 1), sequence[1:]].sum())
            for row, sequence in enumerate(sequences)
        ]

    def text(self, tokens: list[int]) -> str:
        pieces = b"".join(
            bytes([token - 3])
            if 3 <= token < Tokenizer.FIRST_PIECE
            else self.tokenizer.pieces[token]
            for token in tokens
        )
        return pieces.decode("utf-8", "replace").replace("\u2581", " ").strip()


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities from logits, over the last axis."""
    values = logits.astype(np.float64)
    peak = values.max(axis=-1, keepdims=True)
    result: np.ndarray = values - peak - np.log(np.exp(values - peak).sum(axis=-1, keepdims=True))
    return result


_lock = threading.Lock()


@functools.cache
def _loaded() -> Moonshine:
    return Moonshine()


def load() -> Moonshine:
    """The process's model, loaded once (a few seconds) by whichever thread asks first."""
    with _lock:
        return _loaded()


@functools.cache
def command_grammar() -> TokenGrammar:
    """FunPump's command grammar (without its garbage loop) over Moonshine's tokens."""
    return TokenGrammar(command_fsg(garbage_phone=0).transitions, load().tokenizer, prior=PRIOR)


# python -m voice.speech.moonshine (make voice-model): build the cached models ahead of time.
if __name__ == "__main__":
    if not available():
        print("moonshine-cpp is not installed: voice finals will come from pocketsphinx alone")
    elif "--background" in sys.argv[1:]:  # a server's own build (voice/speech/recogniser.py)
        os.nice(10)  # the server's requests come first
        prepare()
    else:
        started = time.perf_counter()
        load()
        print(f"Moonshine ready in {cache_folder()} ({time.perf_counter() - started:.1f} s)")
