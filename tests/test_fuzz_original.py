"""A seeded fuzz of the restricted unpickler for original CREPS pickles (creps.original via
load_generator): byte flips, truncations, opcodes replaced, GLOBAL names swapped for hostile
ones, and payloads (os.system, eval, open, subprocess, torch.load ...) at the top and inside a
tensor storage. Every mutant must give a CheckpointError or a load; no payload's marker file
may ever appear."""

from test_fuzz_readers import assert_clean, run_fuzzer

SEED = 20261201


def test_original_pickle_reader_survives_mutants():
    summary = run_fuzzer("original", 200, SEED, timeout=300)
    assert_clean(summary)
    assert summary["inputs"] == 200
    assert summary["outcomes"]["CheckpointError"] > 150 and summary["outcomes"]["loaded"] > 2
