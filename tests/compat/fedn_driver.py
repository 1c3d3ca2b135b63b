"""Run calls on FEDn 0.9.5's own APIClient and print the results as JSON.

Runs under the .fedn095 venv (not the project's). Reads from stdin
`{"host", "port", "calls": [{"method", "args", "kwargs"}]}` and prints one JSON list with, per
call, `{"result": ...}` or `{"error": "<type>: <message>"}`.
"""

import json
import sys

from fedn import APIClient


def main() -> None:
    plan = json.load(sys.stdin)
    client = APIClient(plan["host"], plan["port"])
    answers = []
    for call in plan["calls"]:
        try:
            result = getattr(client, call["method"])(*call.get("args", []), **call.get("kwargs", {}))
            answers.append({"result": result})
        except Exception as exc:
            answers.append({"error": f"{type(exc).__name__}: {exc}"})
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    main()
