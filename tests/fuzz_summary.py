"""The fuzz corpus by category: `python tests/fuzz_summary.py` runs tests/test_fuzz.py and prints
tried / clean / tracebacks / over time per category (the test id's prefix: raw-, layout-, pdf-, ...)."""
from __future__ import annotations

import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

HERE = Path(__file__).parent


def category(name: str) -> str:
    inside = name[name.find("[") + 1:name.rfind("]")] if "[" in name else name
    return inside.split("-")[0] if "[" in name else "batch"


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "fuzz.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE / "test_fuzz.py"),
                        f"--junitxml={report}"], cwd=HERE.parent, capture_output=True, text=True)
        cases = ET.parse(report).getroot().iter("testcase")
        counts: dict[str, Counter] = {}
        for case in cases:
            tally = counts.setdefault(category(case.get("name")), Counter())
            tally["tried"] += 1
            failure = case.find("failure") if case.find("failure") is not None else case.find("error")
            text = "" if failure is None else (failure.get("message") or "") + (failure.text or "")
            if failure is None:
                tally["clean"] += 1
            elif "over time" in text:
                tally["over time"] += 1
            elif "Traceback" in text or "Error" in text:
                tally["tracebacks"] += 1
            else:
                tally["other failures"] += 1
    columns = ["tried", "clean", "tracebacks", "over time", "other failures"]
    print(f"{'category':10}" + "".join(f"{c:>16}" for c in columns))
    for name, tally in sorted(counts.items()):
        print(f"{name:10}" + "".join(f"{tally[c]:>16}" for c in columns))
    total = sum(counts.values(), Counter())
    print(f"{'total':10}" + "".join(f"{total[c]:>16}" for c in columns))
    return 0 if total["clean"] == total["tried"] else 1


if __name__ == "__main__":
    sys.exit(main())
