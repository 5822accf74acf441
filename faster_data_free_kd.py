"""The same script as ``datafree_kd.py``, under the name the issue's users type."""

from datafree.run import main
from helper.errors import run_cli

if __name__ == "__main__":
    run_cli(main)
