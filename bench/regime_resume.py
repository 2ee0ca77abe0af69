"""A run in the simulated regime, killed and resumed, replays without the endpoint (issue #26).

    python bench/regime_resume.py [--problem bbob-f21] [--seed 3] [--kill-at 14] [--work DIR]

One group C run (guidance ignored: Level 2 carries the search) against ``regime_llm``'s
endpoint, killed with SIGKILL once iteration ``--kill-at``'s trial is recorded, then
``arx run --resume`` to its end. The endpoint is then stopped and ``arx replay`` must serve
every LLM request from the run's transcripts. Prints the resume, the Level-2 events and the
replay's verdict; exits 1 unless the replay reproduced.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import regime  # noqa: E402  (bench/, beside this script)
import regime_llm  # noqa: E402
import suite  # noqa: E402

ARX = [sys.executable, "-m", "arx.cli.main"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", default="bbob-f21")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--kill-at", type=int, default=14)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="arx-regime-resume-"))
    problem = suite.PROBLEMS[args.problem]
    root = work / problem.name
    suite.make_repo(problem, root)
    arx = [*ARX, "-C", str(root)]
    env = {**os.environ, "ARX_API_KEY": "sk-bench-not-a-key"}
    model = regime_llm.Model(prefer=regime.PREFERENCES.get(problem.script, ()), guidance=False)
    t0 = time.monotonic()
    with regime_llm.Endpoint(model) as endpoint:
        proc = subprocess.Popen(
            [*arx, "run", "--name", "rk", "--group", "C", "--iterations", str(args.iterations),
             "--noise", "off", "--seed", str(args.seed), "--llm", endpoint.base_url(args.seed),
             "--model", regime_llm.MODEL_ID, "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line) if line.startswith("{") else {}
            if event.get("event") == "trial" and event.get("iteration", 0) >= args.kill_at:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        print(f"killed after iteration {event.get('iteration')}'s trial (exit {proc.returncode})")
        done = subprocess.run([*arx, "run", "--resume", "rk", "--quiet"], capture_output=True,
                              text=True, env=env)
        if done.returncode != 0:
            raise SystemExit(f"resume failed: {done.stderr[-2000:]}")
    print(f"resumed to the end; endpoint stopped ({time.monotonic() - t0:.0f} s)")
    trace = subprocess.run(["git", "-C", str(root), "show", "arx/rk:runs/rk/trace.jsonl"],
                           capture_output=True, text=True, check=True).stdout
    events = [json.loads(line) for line in trace.splitlines()]
    print("resumes (interrupted):", [e.get("interrupted") for e in events
                                     if e["event"] == "resume"])
    print("level2:", [(e.get("cycle"), e.get("mechanism"), e.get("verdict"))
                      for e in events if e["event"] == "level2"])
    t1 = time.monotonic()
    replay = subprocess.run([*arx, "replay", "arx/rk", "--json"], capture_output=True, text=True,
                            env={k: v for k, v in env.items() if k != "ARX_API_KEY"})
    data = json.loads(replay.stdout) if replay.stdout.startswith("{") else {}
    print(f"replay: {data.get('result')}, {data.get('steps_checked')} of {data.get('steps')} "
          f"steps, {data.get('counts')} ({time.monotonic() - t1:.0f} s)")
    if data.get("result") != "reproduced":
        raise SystemExit(replay.stdout[-2000:] + replay.stderr[-2000:])


if __name__ == "__main__":
    main()
