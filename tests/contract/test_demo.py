"""The main job works for a newcomer: `python -m portres demo`."""

import subprocess
import sys


def test_demo_runs_and_reports_a_held_block():
    proc = subprocess.run([sys.executable, "-m", "portres", "demo"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "8 of 8 ports refused to the other program while reserved" in out
    assert out.count("ok (") == 4
    assert "the other program's bind of" in out and out.rstrip().endswith("bound.")


def test_cli_without_command_prints_help():
    proc = subprocess.run([sys.executable, "-m", "portres"], capture_output=True, text=True)
    assert proc.returncode == 2 and "demo" in proc.stdout
