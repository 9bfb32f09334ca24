"""The command line."""
import subprocess
import sys

from nptransformer.cli import main


def test_demo_runs_and_gradchecks(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "gradcheck : True" in out
    assert "times 0.5 everywhere" in out  # the broken Function is caught and explained


def test_module_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "nptransformer", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout
