"""The command line behaves like a tool: fast help, quiet TensorFlow, progress and summary lines.

The start-up checks run in subprocesses: conftest imports TensorFlow into this process, so
only a fresh interpreter shows what ``cavachon_like.cli`` imports by itself. None trains.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cavachon_like import cli
from cavachon_like.progress import Steps, format_seconds

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    """``python *args`` from the repository root, with the environment of a user's shell:
    conftest's TF_CPP_MIN_LOG_LEVEL is removed so the command line's own default is tested."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    # check=False: the exit code is what the tests assert on
    return subprocess.run([sys.executable, *args], check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_command_line_answers_help_without_importing_tensorflow():
    result = _run("-X", "importtime", "-m", "cavachon_like.cli", "train", "--help")
    assert result.returncode == 0, result.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert "cavachon_like" in imported and "tensorflow" not in imported and "keras" not in imported


def test_importing_the_package_registers_its_keras_objects():
    """A library user loads a saved model with `import cavachon_like` and Keras alone."""
    code = ("import cavachon_like, keras; "
            "print(keras.saving.get_registered_object('cavachon_like>CAVACHON') is cavachon_like.CAVACHON)")
    result = _run("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "True"


def test_help_exits_0_without_tensorflow_lines():
    result = _run("-m", "cavachon_like.cli", "train", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: cavachon-like train")
    assert "--verbose" in result.stdout
    for chatter in ("oneDNN", "cuInit", "absl::InitializeLog", "cuda"):
        assert chatter not in result.stderr


def test_an_unknown_option_exits_2_with_usage():
    result = _run("-m", "cavachon_like.cli", "train", "config.yaml", "--no-such-option")
    assert result.returncode == 2
    assert "usage: cavachon-like" in result.stderr
    assert "unrecognized arguments: --no-such-option" in result.stderr
    assert "oneDNN" not in result.stderr


def test_loading_tensorflow_through_the_cli_is_quiet():
    """What every command does first: TensorFlow's C++ start-up lines are filtered out.

    The one test here that imports TensorFlow (a few seconds), since that is what it checks.
    """
    result = _run("-m", "cavachon_like.cli", "predict", str(ROOT / "no-such-run"), "--target", "rna")
    assert result.returncode == 2, result.stderr
    assert "no-such-run" in result.stderr
    for chatter in ("oneDNN custom operations", "cuInit", "absl::InitializeLog", "cpu_feature_guard"):
        assert chatter not in result.stderr


def test_public_names_load_on_first_use():
    import cavachon_like
    from cavachon_like import simulate

    assert cavachon_like.CAVACHON.__name__ == "CAVACHON"
    assert callable(simulate) and simulate is cavachon_like.simulate
    assert set(cavachon_like.__all__) <= set(dir(cavachon_like))
    assert cavachon_like.__version__
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        cavachon_like.nope  # noqa: B018


@pytest.mark.parametrize(("argv", "verbose"), [
    (["train", "c.yaml"], False),
    (["--verbose", "train", "c.yaml"], True),
    (["train", "c.yaml", "--verbose"], True),
    (["-v", "analyze", "run", "-v"], True),
    (["predict", "run", "--target", "rna", "-v"], True),
])
def test_verbose_before_or_after_the_subcommand(argv, verbose):
    assert cli._parser().parse_args(argv).verbose is verbose


def test_filtered_stderr_drops_tensorflow_lines_and_keeps_the_rest(capfd, caplog):
    caplog.set_level(logging.INFO, logger="cavachon_like")
    lines = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
        "I0000 00:00:1796196308.186971   14658 port.cc:153] oneDNN custom operations are on.\n",
        "W0000 00:00:1796196308.187619   14658 cudart_stub.cc:31] Could not find cuda drivers\n",
        "E0000 00:00:1796196337.496961   14928 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n",
        "E0000 00:00:1796196337.500000   14928 other.cc:1] a real error\n",
        "a Python warning\n",
    ]
    with cli._filtered_stderr():
        for line in lines:  # written to the descriptor, as TensorFlow's C++ code does
            os.write(2, line.encode())
    err = capfd.readouterr().err
    assert err == lines[4] + lines[5]
    assert any("no usable GPU" in r.getMessage() for r in caplog.records)


def test_steps_log_a_line_as_each_starts_and_ends(caplog):
    caplog.set_level(logging.INFO, logger="cavachon_like")
    steps = Steps(2)
    steps.start("clusters")
    steps.start("differential analysis (cell_type, 15 groups)")
    assert steps.finish() >= 0
    assert steps.finish() is None  # nothing running any more
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "[1/2] clusters ..."
    assert messages[1].startswith("[1/2] clusters: ") and messages[1].endswith(" s")
    assert messages[2] == "[2/2] differential analysis (cell_type, 15 groups) ..."
    assert messages[3].startswith("[2/2] differential analysis (cell_type, 15 groups): ")
    assert len(messages) == 4


def test_durations_and_summary_lines_read_well(tmp_path):
    assert format_seconds(41.23) == "41.2 s"
    assert format_seconds(303.4) == "5 min 03 s"
    out = tmp_path / "analysis"
    paths = [out / "a.csv", out / "b.png", out / "report.html"]
    assert cli._wrote(paths, out / "report.html") == f"wrote 3 files to {out} (report: {out / 'report.html'})"
    assert cli._wrote([out / "p.h5mu"]) == f"wrote {out / 'p.h5mu'}"
