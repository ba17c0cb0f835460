"""Seeded mutation fuzzing of the three readers of untrusted files: bundle manifests
(`read_bundle`, then a `Runtime` load), our safetensors checkpoints and original-format
pickles (`load_generator`).

Every input must end in a typed error (a CrepsError kind) or a load. Anything else is a
finding: another exception (a traceback a user would see), a hang (an input that runs past
the per-input timer) or code run (a payload's marker file appears). Input i of a run with
seed s is mutated by `random.Random(f"{s}:{i}")`, so one finding reproduces alone with
`--seed s --only i`.

Run as a script (`python tests/fuzz_readers.py --reader original --inputs 2000 --seed 7`),
it prints the summary as JSON; tests run it in a subprocess with a wall-clock limit, so a
hang inside C code that the per-input timer cannot interrupt still ends the run.
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import math
import pickletools
import random
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
from pathlib import Path

READERS = ("bundle", "checkpoint", "original")
PER_INPUT_SECONDS = 10.0
RUNTIME_LOADS = 10  # manifests that pass read_bundle and also go through a Runtime (ONNX Runtime sessions)


class Hang(BaseException):
    """Raised by the per-input timer; a BaseException, so no reader's except clause takes it."""


def _alarm(signum, frame):
    raise Hang()


class Summary:
    """Inputs tried, outcomes by error type, and every finding with the index that reproduces it."""

    def __init__(self, reader: str, seed: int):
        self.reader, self.seed = reader, seed
        self.inputs = 0
        self.outcomes = collections.Counter()
        self.tracebacks: dict[str, dict] = {}  # "Type at file:line" -> first index, count, message
        self.hangs: list[int] = []
        self.code_run: list[int] = []

    def record(self, index: int, outcome: str, error: BaseException | None = None) -> None:
        self.inputs += 1
        self.outcomes[outcome] += 1
        if outcome == "traceback":
            frames = traceback.extract_tb(error.__traceback__)
            where = type(error).__name__ + (f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "")
            entry = self.tracebacks.setdefault(where, {"index": index, "count": 0,
                                                       "message": str(error).splitlines()[0][:200] if str(error) else ""})
            entry["count"] += 1
        elif outcome == "hang":
            self.hangs.append(index)

    def to_dict(self) -> dict:
        return {"reader": self.reader, "seed": self.seed, "inputs": self.inputs, "outcomes": dict(self.outcomes),
                "tracebacks": self.tracebacks, "hangs": self.hangs, "code_run": self.code_run}


def run_one(load, timeout: float = PER_INPUT_SECONDS) -> tuple[str, BaseException | None]:
    """(outcome, the exception): "loaded", a CrepsError kind's name, "hang" or "traceback"."""
    from creps.errors import CrepsError

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        load()
        return "loaded", None
    except Hang as exc:
        return "hang", exc
    except CrepsError as exc:
        if "\n" in str(exc):  # a typed error must still be one line for the command layer
            return "traceback", ValueError(f"multi-line {type(exc).__name__}: {exc!r}")
        return type(exc).__name__, exc
    except Exception as exc:  # the finding itself: anything untyped
        return "traceback", exc
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def fuzz(reader: str, target, mutate, inputs: int, seed: int, marker: Path | None = None,
         only: int | None = None, timeout: float = PER_INPUT_SECONDS) -> Summary:
    """target(data) for `inputs` mutants mutate(rng) -> data; `marker` must never appear."""
    summary = Summary(reader, seed)
    for index in ([only] if only is not None else range(inputs)):
        data = mutate(random.Random(f"{seed}:{index}"))
        outcome, error = run_one(lambda: target(data), timeout)
        summary.record(index, outcome, error)
        if marker is not None and marker.exists():
            summary.code_run.append(index)
            marker.unlink()
    time.sleep(0.2)  # a payload run in a child process (subprocess.Popen) writes late
    if marker is not None and marker.exists():
        summary.code_run.append(-1)  # some input ran code; rerun with --only to find which
    return summary


# ---- generic mutations -------------------------------------------------------------------

SPECIAL_VALUES = [0, 1, -1, 2, 3, 8, 32, 255, 2**31 - 1, 2**31, 2**63, 10**30, -(10**30), 0.5, 1.0, -0.0, 1e308,
                  float("nan"), float("inf"), True, False, None, "", "0", "32", "float32", "batch", "x" * 300, "\0",
                  "../x", [], [0], [1, 2], {}, {"a": 1}, [[[[[]]]]]]


def random_value(rng: random.Random, depth: int = 0):
    choice = rng.random()
    if choice < 0.6 or depth > 2:
        return copy.deepcopy(rng.choice(SPECIAL_VALUES))
    if choice < 0.8:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["a", "name", "shape", "file", "z_dim"]): random_value(rng, depth + 1)
            for _ in range(rng.randint(0, 3))}


def _containers(obj, path=()):
    """Every (path, container) inside a JSON value."""
    if isinstance(obj, (dict, list)):
        yield path, obj
        items = obj.items() if isinstance(obj, dict) else enumerate(obj)
        for key, value in items:
            yield from _containers(value, path + (key,))


def retype(value, rng: random.Random):
    """The same value as another JSON type (what a hand edit or a bad writer gives)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return rng.choice([str(value), float(value), -value, value * 2**rng.randint(1, 40), [value], value + 1])
    if isinstance(value, float):
        return rng.choice([int(value) if math.isfinite(value) else 0, str(value)])
    if isinstance(value, str):
        return rng.choice([value.upper(), value[:-1], value + "x", [value], None, len(value)])
    if isinstance(value, list):
        return rng.choice([dict(enumerate(value)), value[:-1], value + value[-1:], list(reversed(value)),
                           tuple(value) and {str(i): v for i, v in enumerate(value)}])
    if isinstance(value, dict):
        return rng.choice([list(value.values()), list(value), {}, None])
    return random_value(rng)


def mutate_json(obj, rng: random.Random, edits: int | None = None):
    """A copy of a JSON value with 1-4 edits: keys dropped, added or renamed, values replaced,
    retyped, nested or duplicated."""
    obj = copy.deepcopy(obj)
    for _ in range(edits or rng.randint(1, 4)):
        places = list(_containers(obj))
        if not places:
            return random_value(rng)
        _, container = rng.choice(places)
        keys = list(container) if isinstance(container, dict) else list(range(len(container)))
        op = rng.choice(["drop", "add", "rename", "replace", "retype", "retype", "nest", "duplicate"])
        if not keys or op == "add":
            key = rng.choice(["x", "extra", "z_dim", "stage", "shape", "name", "0"]) if isinstance(container, dict) \
                else len(container)
            if isinstance(container, dict):
                container[key] = random_value(rng)
            else:
                container.append(random_value(rng))
            continue
        key = rng.choice(keys)
        if op == "drop":
            del container[key]
        elif op == "rename" and isinstance(container, dict):
            container[rng.choice([str(key).upper(), f"{key}_", str(key)[:-1] or "_"])] = container.pop(key)
        elif op == "replace":
            container[key] = random_value(rng)
        elif op in ("retype", "rename"):
            container[key] = retype(container[key], rng)
        elif op == "nest":
            container[key] = rng.choice([[container[key]], {"value": container[key]}])
        else:
            container[key] = copy.deepcopy(container[rng.choice(keys)])
    return obj


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """Flipped bytes, a truncation, a deleted or repeated span, or random bytes spliced in."""
    data = bytearray(data)
    op = rng.choice(["flip", "flip", "truncate", "delete", "repeat", "splice"])
    if not data:
        return bytes(rng.randbytes(rng.randint(0, 16)))
    at = rng.randrange(len(data))
    if op == "flip":
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif op == "truncate":
        del data[at:]
    elif op == "delete":
        del data[at:at + rng.randint(1, 64)]
    elif op == "repeat":
        data[at:at] = data[at:at + rng.randint(1, 64)]
    else:
        data[at:at] = rng.randbytes(rng.randint(1, 16))
    return bytes(data)


def deep_json(rng: random.Random) -> str:
    depth = rng.choice([50, 5000, 200000])
    return "[" * depth + "]" * depth if rng.random() < 0.5 else '{"a":' * depth + "1" + "}" * depth


# ---- (a) bundle manifests ----------------------------------------------------------------


def bundle_fuzzer(bundle_dir: Path, work: Path):
    """(target, mutate) over copies of a real bundle's manifest.json (its graph files kept)."""
    from creps.runtime import Runtime
    from creps.runtime.bundle import MANIFEST, read_bundle

    folder = work / "bundle"
    shutil.copytree(bundle_dir, folder)
    text = (folder / MANIFEST).read_text()
    manifest = json.loads(text)
    runtime_loads = []

    def mutate(rng: random.Random) -> bytes:
        choice = rng.random()
        if choice < 0.75:
            section = rng.choice([None, "model", "model", "graphs", "engines"])
            mutant = dict(manifest)  # mutate_json copies what it edits
            if section is None:
                mutant = mutate_json(mutant, rng)
            elif section == "engines":
                mutant["engines"] = mutate_json({"e": {"file": "mapping.onnx", "sha256": "0" * 64,
                                                       "precision": "fp32"}}, rng)
            else:
                mutant[section] = mutate_json(mutant[section], rng)
            return json.dumps(mutant).encode()
        if choice < 0.95:
            return mutate_bytes(text.encode(), rng)
        return deep_json(rng).encode()

    def target(data: bytes) -> None:
        (folder / MANIFEST).write_bytes(data)
        read_bundle(folder)
        if len(runtime_loads) < RUNTIME_LOADS:  # sessions cost ~0.1 s: a few of the readable ones
            runtime_loads.append(1)
            Runtime(folder, backend="ort-cpu", threads=1)

    return target, mutate


# ---- (b) safetensors checkpoints ---------------------------------------------------------

FUZZ_CONFIG = dict(z_dim=4, w_dim=4, img_resolution=8, mapping_layers=1, channel_base=32, channel_max=4,
                   biline_channels=4, rank=2)


def split_safetensors(data: bytes) -> tuple[dict, bytes]:
    """(the JSON header, the tensor bytes) of a safetensors file (8-byte LE length, JSON, data)."""
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), data[8 + length:]


def join_safetensors(header, body: bytes, length: int | None = None) -> bytes:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(raw) if length is None else length) + raw + body


def checkpoint_fuzzer(work: Path):
    """(target, mutate) over a tiny generator checkpoint: header JSON (dtypes, shapes,
    offsets, metadata and the creps.config JSON inside it), header length, bytes."""
    import torch

    from creps import load_generator, save_checkpoint
    from creps.model import Generator, GeneratorConfig

    torch.manual_seed(0)
    cfg = GeneratorConfig(**FUZZ_CONFIG)
    good = work / "good.safetensors"
    save_checkpoint(good, {"G_ema": Generator(cfg), "G": Generator(cfg)}, cfg, metadata={"creps.kimg": "1"})
    data = good.read_bytes()
    header, body = split_safetensors(data)
    path = work / "mutant.safetensors"

    def mutate(rng: random.Random) -> bytes:
        choice = rng.random()
        if choice < 0.3:  # the model config, JSON inside a JSON string
            mutant = {**header, "__metadata__": dict(header["__metadata__"])}
            config = json.loads(mutant["__metadata__"]["creps.config"])
            mutant["__metadata__"]["creps.config"] = json.dumps(mutate_json(config, rng, rng.randint(1, 2)))
            return join_safetensors(mutant, body)
        if choice < 0.65:  # one tensor's entry, the metadata, or the header as a whole
            mutant = dict(header)
            key = rng.choice([None, "__metadata__", *rng.sample(sorted(mutant), 3)])
            if key is None:
                mutant = mutate_json(mutant, rng)
            else:
                mutant[key] = mutate_json(mutant[key], rng, rng.randint(1, 2))
            return join_safetensors(mutant, body)
        if choice < 0.8:  # the length field
            raw = json.dumps(header).encode()
            length = rng.choice([0, 1, len(raw) - 1, len(raw) + 1, len(raw) + rng.randint(2, 4096), 2**32,
                                 2**63, 2**64 - 1, len(data)])
            return join_safetensors(raw, body, length)
        if choice < 0.9:  # the header's text
            return join_safetensors(mutate_bytes(json.dumps(header).encode(), rng), body)
        return mutate_bytes(data, rng)

    def target(mutant: bytes) -> None:
        path.write_bytes(mutant)
        load_generator(path)

    return target, mutate


# ---- (c) original-format pickles ---------------------------------------------------------

ALLOWED_NAMES = ["torch_utils.persistence", "_reconstruct_persistent_obj", "torch._utils", "_rebuild_tensor_v2",
                 "torch.storage", "_load_from_bytes", "collections", "OrderedDict", "dnnlib.util", "EasyDict",
                 "numpy._core.multiarray", "scalar", "builtins", "set"]
HOSTILE_NAMES = [("os", "system"), ("posix", "system"), ("builtins", "eval"), ("builtins", "exec"),
                 ("builtins", "open"), ("builtins", "getattr"), ("builtins", "__import__"), ("subprocess", "Popen"),
                 ("torch", "load"), ("pickle", "loads"), ("numpy", "load"), ("torch._utils", "_rebuild_parameter_v2"),
                 ("collections", "os"), ("torch_utils.persistence", "os")]


def _string_ops(data: bytes) -> list[tuple[int, int, str, str]]:
    """(start, end, opcode name, text) of every string-carrying opcode (the parts of a GLOBAL)."""
    ops = []
    try:
        items = list(pickletools.genops(data))
    except Exception:  # noqa: BLE001 (pickletools' own parse of a mutant; only positions are wanted)
        return ops
    for (op, arg, pos), (_, _, following) in zip(items, items[1:] + [(None, None, len(data))]):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "GLOBAL") and isinstance(arg, str):
            ops.append((pos, following, op.name, arg))
    return ops


def _encode_string(op: str, text: str) -> bytes:
    raw = text.encode()
    if op == "GLOBAL":
        return b"c" + text.replace(" ", "\n").encode() + b"\n"
    if op == "SHORT_BINUNICODE" and len(raw) < 256:
        return b"\x8c" + bytes([len(raw)]) + raw
    return b"X" + struct.pack("<I", len(raw)) + raw


def original_fuzzer(work: Path, marker: Path):
    """(target, mutate) over a tiny original-format snapshot and hostile variants of it."""
    import torch

    import original_format as of
    from creps import load_generator
    from creps.model import Generator, GeneratorConfig

    torch.manual_seed(0)
    G = Generator(GeneratorConfig(**FUZZ_CONFIG))
    # One shared storage: several times faster to read than one blob per tensor (still 1 in 20 here).
    good = of.dumps({"G_ema": of.original_generator(G), "augment_pipe": None}, one_storage=True)
    per_tensor = of.dumps({"G_ema": of.original_generator(G), "augment_pipe": None})
    # Payloads first, so most are met before the generator is read (as a hostile file would put them).
    hostile = [of.dumps({"evil": payload, "G_ema": of.original_generator(G)}, one_storage=True)
               for payload in of.payloads(marker).values()]
    hostile += [of.dumps({"w": of.hostile_tensor(payload), "G_ema": of.original_generator(G)}, one_storage=True)
                for payload in of.payloads(marker).values()]
    good_strings = _string_ops(good)
    good_ops = [pos for _, _, pos in pickletools.genops(good)]
    opcodes = [op.code.encode("latin-1") for op in pickletools.opcodes]
    path = work / "mutant.pkl"

    def mutate(rng: random.Random) -> bytes:
        choice = rng.random()
        if choice < 0.15:  # a payload, as written or damaged
            data = rng.choice(hostile)
            return data if rng.random() < 0.5 else mutate_bytes(data, rng)
        if choice < 0.45:  # a GLOBAL's module or name replaced
            start, end, op, text = rng.choice(good_strings)
            if op == "GLOBAL":
                module, name = rng.choice(HOSTILE_NAMES)
                new = f"{module} {name}"
            else:
                new = rng.choice([*ALLOWED_NAMES, *(m for m, _ in HOSTILE_NAMES), *(n for _, n in HOSTILE_NAMES),
                                  text[:-1], text + "_", ""])
            return good[:start] + _encode_string(op, new) + good[end:]
        if choice < 0.7:  # one opcode byte replaced
            pos = rng.choice(good_ops)
            return good[:pos] + rng.choice(opcodes) + good[pos + 1:]
        return mutate_bytes(good if choice < 0.95 else per_tensor, rng)

    def target(data: bytes) -> None:
        path.write_bytes(data)
        load_generator(path)

    return target, mutate


def run_reader(reader: str, inputs: int, seed: int, bundle: Path | None = None, only: int | None = None) -> dict:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="creps-fuzz-") as tmp:
        work = Path(tmp)
        marker = work / "code-ran"
        if reader == "bundle":
            if bundle is None:
                raise SystemExit("the bundle fuzzer needs --bundle DIR (a real bundle; its manifest is mutated)")
            target, mutate = bundle_fuzzer(bundle, work)
        elif reader == "checkpoint":
            target, mutate = checkpoint_fuzzer(work)
        else:
            target, mutate = original_fuzzer(work, marker)
        summary = fuzz(reader, target, mutate, inputs, seed, marker, only).to_dict()
    return {**summary, "seconds": round(time.perf_counter() - start, 2)}


def main(argv=None) -> None:
    import logging

    logging.disable(logging.CRITICAL)  # loaders log each load; thousands of lines say nothing here
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reader", choices=READERS, required=True)
    parser.add_argument("--inputs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bundle", type=Path, help="a bundle folder (for --reader bundle)")
    parser.add_argument("--only", type=int, help="run input number ONLY alone (to reproduce a finding)")
    args = parser.parse_args(argv)
    json.dump(run_reader(args.reader, args.inputs, args.seed, args.bundle, args.only), sys.stdout)
    print()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # original_format
    main()
