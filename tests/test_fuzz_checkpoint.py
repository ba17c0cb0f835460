"""A seeded fuzz of our safetensors checkpoint reader (creps.checkpoint via load_generator):
header length, header JSON (dtypes, shapes, offsets), metadata and the creps.config JSON in it.
Every mutant must give a CheckpointError or a load, never a traceback or a hang."""

from test_fuzz_readers import assert_clean, run_fuzzer

SEED = 20261201  # fixed, so a failure reproduces; benchmarks/fuzz.py runs other seeds and more inputs


def test_checkpoint_reader_survives_mutants():
    summary = run_fuzzer("checkpoint", 400, SEED, timeout=300)
    assert_clean(summary)
    assert summary["inputs"] == 400
    # The mutants reach every stage of the reader: refusals and loads (a mutated value that still fits).
    assert summary["outcomes"]["CheckpointError"] > 300 and summary["outcomes"]["loaded"] > 3
