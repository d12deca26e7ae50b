"""Airflow DAG: `fidelis weekly` every Monday at 06:00, its exit code mapped to task states.

| exit | meaning (README "Command line")                        | task `weekly`              | task `check`          |
|------|--------------------------------------------------------|----------------------------|-----------------------|
| 0    | scored, written, monitored, reported                    | success                    | success               |
| 3    | written; a monitoring alert (`--fail-on-alert`)          | success (the scores stand) | failed: "alert"       |
| 6, 7 | scores written; monitoring/report or a delivery failed  | success (the scores stand) | failed: "partial"     |
| 4    | the output is locked by another run                     | up for retry (retries)     | -                     |
| 2, 5 | bad input/configuration/model; an output not written    | failed, no retry           | -                     |

Copy this file into the DAGs folder; set the Airflow Variables `fidelis_bin` (the binary) and
`fidelis_dir` (the working directory holding fidelis.toml), or the environment variables
FIDELIS_BIN / FIDELIS_DIR the workers see. Secrets (FIDELIS_PG_URL, webhook URLs) come from the
workers' environment, as for cron.
"""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timedelta

from airflow.sdk import dag, task
from airflow.sdk.exceptions import AirflowException, AirflowFailException

# Exit codes after which the scores are written (the weekly task succeeds) but someone must look.
NEEDS_A_LOOK = {3: "alert", 6: "partial", 7: "partial"}
RETRY_LATER = {4}


def outcome(code: int, log: str) -> str:
    """The weekly task's result for `fidelis weekly`'s exit code: "ok", "alert" or "partial";
    raises for a retry (locked) or a failure that retrying cannot fix."""
    if code == 0:
        return "ok"
    if code in NEEDS_A_LOOK:
        return NEEDS_A_LOOK[code]
    if code in RETRY_LATER:
        raise AirflowException(f"fidelis weekly: output locked by another run (exit 4), retrying later\n{log}")
    raise AirflowFailException(f"fidelis weekly failed (exit {code}); fix the cause, then clear the task\n{log}")


def run_weekly(binary: str, workdir: str, config: str = "fidelis.toml") -> str:
    """`fidelis weekly --fail-on-alert` in `workdir`, its output in the task log, mapped by `outcome`."""
    done = subprocess.run(
        [binary, "weekly", "--config", config, "--fail-on-alert"], cwd=workdir, capture_output=True, text=True
    )
    print(done.stdout)
    print(done.stderr)
    return outcome(done.returncode, done.stdout[-2000:] + done.stderr[-2000:])


def check(result: str) -> None:
    """Fails (so the run shows red and on-failure alerting fires) when the scores are written
    but need a look."""
    if result != "ok":
        raise AirflowFailException(f"fidelis weekly: {result}; the scores are written, see the weekly task's log")


def setting(name: str, env: str, default: str) -> str:
    from airflow.sdk import Variable

    return str(Variable.get(name, default=os.environ.get(env, default)))


@dag(
    dag_id="fidelis_weekly",
    schedule="0 6 * * MON",
    start_date=datetime(2026, 1, 5),
    catchup=False,
    default_args={"retries": 6, "retry_delay": timedelta(minutes=30)},
    tags=["fidelis", "churn"],
)
def fidelis_weekly() -> None:
    @task(task_id="weekly")
    def weekly() -> str:
        return run_weekly(setting("fidelis_bin", "FIDELIS_BIN", "fidelis"), setting("fidelis_dir", "FIDELIS_DIR", "."))

    @task(task_id="check", retries=0)
    def needs_a_look(result: str) -> None:
        check(result)

    needs_a_look(weekly())


dag_object = fidelis_weekly()

if __name__ == "__main__":
    # `python fidelis_weekly.py`: one run in process (Airflow's dag.test), what the tests do.
    dag_object.test()
