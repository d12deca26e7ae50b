"""Dagster job: `fidelis weekly` every Monday at 06:00, its exit code mapped to op results.

| exit | meaning (README "Command line")                       | op `weekly`                 | op `check`        |
|------|-------------------------------------------------------|-----------------------------|-------------------|
| 0    | scored, written, monitored, reported                   | success                     | success           |
| 3    | written; a monitoring alert (`--fail-on-alert`)         | success (the scores stand)  | failure "alert"   |
| 6, 7 | scores written; monitoring/report or delivery failed   | success (the scores stand)  | failure "partial" |
| 4    | the output is locked by another run                    | RetryRequested (6 x 30 min) | -                 |
| 2, 5 | bad input/configuration/model; an output not written   | Failure, no retry           | -                 |

Load it with `dagster dev -f fidelis_weekly.py` (or list it in a code location); set
FIDELIS_BIN (the binary) and FIDELIS_DIR (the working directory holding fidelis.toml) in the
code location's environment, or the op config. Secrets (FIDELIS_PG_URL, webhook URLs, AWS
keys) come from that environment, as for cron.
"""

import os
import subprocess

from dagster import Config, Definitions, Failure, OpExecutionContext, RetryRequested, ScheduleDefinition, job, op

# Exit codes after which the scores are written (the weekly op succeeds) but someone must look.
NEEDS_A_LOOK = {3: "alert", 6: "partial", 7: "partial"}
RETRY_LATER = {4}


def outcome(code: int, log: str) -> str:
    """The weekly op's result for `fidelis weekly`'s exit code: "ok", "alert" or "partial";
    raises RetryRequested (locked) or Failure (retrying cannot fix it)."""
    if code == 0:
        return "ok"
    if code in NEEDS_A_LOOK:
        return NEEDS_A_LOOK[code]
    if code in RETRY_LATER:
        raise RetryRequested(max_retries=6, seconds_to_wait=30 * 60)
    raise Failure(description=f"fidelis weekly failed (exit {code}); fix the cause, then re-run", metadata={"log": log})


class WeeklyConfig(Config):
    binary: str = os.environ.get("FIDELIS_BIN", "fidelis")
    workdir: str = os.environ.get("FIDELIS_DIR", ".")
    config: str = "fidelis.toml"


@op
def weekly(context: OpExecutionContext, config: WeeklyConfig) -> str:
    """`fidelis weekly --fail-on-alert` in the working directory, its output in the op's log."""
    done = subprocess.run(
        [config.binary, "weekly", "--config", config.config, "--fail-on-alert"],
        cwd=config.workdir,
        capture_output=True,
        text=True,
    )
    context.log.info(done.stdout)
    if done.stderr:
        context.log.warning(done.stderr)
    return outcome(done.returncode, done.stdout[-2000:] + done.stderr[-2000:])


@op
def check(result: str) -> None:
    """Fails (the run shows red, run-failure sensors fire) when the scores are written but need a look."""
    if result != "ok":
        raise Failure(description=f"fidelis weekly: {result}; the scores are written, see the weekly op's log")


@job
def fidelis_weekly() -> None:
    check(weekly())


defs = Definitions(
    jobs=[fidelis_weekly],
    schedules=[ScheduleDefinition(job=fidelis_weekly, cron_schedule="0 6 * * MON")],
)

if __name__ == "__main__":
    # `python fidelis_weekly.py`: one run in process, what the tests do.
    result = fidelis_weekly.execute_in_process(raise_on_error=False)
    raise SystemExit(0 if result.success else 1)
