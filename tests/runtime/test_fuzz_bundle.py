"""A seeded fuzz of the bundle reader: the real tiny bundle's manifest.json with keys dropped,
added and renamed, values replaced and retyped, sections nested, text truncated or flipped,
JSON nested past the decoder's depth; read_bundle, and a Runtime for some that read. Every
mutant must give a BundleError or a load, never a traceback or a hang."""

from test_fuzz_readers import assert_clean, run_fuzzer

SEED = 20261201


def test_bundle_reader_survives_mutants(tiny_bundle):
    summary = run_fuzzer("bundle", 1500, SEED, 300, "--bundle", str(tiny_bundle))
    assert_clean(summary)
    assert summary["inputs"] == 1500
    assert summary["outcomes"]["BundleError"] > 1100 and summary["outcomes"].get("loaded", 0) > 5
