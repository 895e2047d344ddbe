"""The pure job core (`saas.rti.jobs.handle`): events in, instructions out, without processes, files or a loop.
In the style of dask/distributed's worker-state tests: each case feeds events to a machine in a given state and
checks the state it ends in and the instructions, in order."""

from __future__ import annotations

from typing import Any

import pytest

from saas.rti import jobs
from saas.rti.jobs import FINAL_STATES, IllegalTransitionError, JobState, JobStateMachine, handle
from saas.rti.scheduler import SlotPool

S = JobState
LIVE = [S.PENDING, S.INITIALISING, S.RUNNING, S.POSTPROCESSING]
AT = 1_700_000_000_000


def kinds(instructions: list[Any]) -> list[str]:
    return [type(i).__name__ for i in instructions]


def feed(state: JobState, *events: Any) -> tuple[JobStateMachine, list[list[Any]]]:
    machine = JobStateMachine(state)
    return machine, [handle(machine, e) for e in events]


# -- a job's way through the pipeline ---------------------------------------------------------------------------


def test_a_processors_job_from_dispatch_to_success() -> None:
    machine, out = feed(
        S.PENDING,
        jobs.Dispatched(AT + 1),
        jobs.InputsReady(AT + 2),
        jobs.Finished(AT + 3),
        jobs.OutputsStored(AT + 4),
        jobs.TaskEnded(AT + 5),
    )
    assert [kinds(i) for i in out] == [
        ["Persist", "PrepareInputs"],
        ["Audit", "Execute"],
        ["Persist", "Release", "StoreOutputs"],
        ["Persist"],
        ["Cleanup", "Finish"],
    ]
    assert out[0][0] == jobs.Persist(wait=False)  # a restart before it lands finds the job pending: nothing ran
    assert out[1] == [jobs.Audit("running"), jobs.Execute()]  # running is stored with the handle, once started
    assert out[2][0] == jobs.Persist(wait=False)
    assert out[3] == [jobs.Persist()]
    assert [(t["state"], t["time"], t["reason"]) for t in machine.timeline[1:]] == [
        ("initialising", AT + 1, "preparing inputs"),
        ("running", AT + 2, "execute.sh started"),
        ("postprocessing", AT + 3, "execute.sh finished"),
        ("successful", AT + 4, "all outputs stored"),
    ]


def test_an_agents_job_waits_for_admission_and_is_recorded_before_the_instance_gets_it() -> None:
    machine, out = feed(
        S.PENDING,
        jobs.Dispatched(AT, agent=True),
        jobs.Admitted(AT + 1),
        jobs.InputsReady(AT + 2, agent=True),
        jobs.StartedOnAgent(AT + 3, instance=2),
        jobs.Finished(AT + 4, agent=True),
        jobs.OutputsStored(AT + 5),
    )
    assert [kinds(i) for i in out] == [
        ["Acquire"],
        ["Persist", "PrepareInputs"],
        ["ExecuteOnAgent"],
        ["Audit", "Notify", "PersistSoon"],
        ["Persist", "Release", "StoreOutputs"],
        ["Persist"],
    ]
    assert out[3][0] == jobs.Audit("running", {"instance": 2})
    assert [t["reason"] for t in machine.timeline[2:]] == [
        "sent to agent instance 2",
        "the agent finished the job",
        "all outputs stored",
    ]
    assert machine.timeline[1]["time"] == AT + 1  # initialising: when admitted, not when dispatched


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (S.INITIALISING, jobs.Dispatched(AT)),
        (S.RUNNING, jobs.Dispatched(AT, agent=True)),
        (S.PENDING, jobs.InputsReady(AT)),
        (S.PENDING, jobs.InputsReady(AT, agent=True)),
        (S.POSTPROCESSING, jobs.StartedOnAgent(AT, 0)),
        (S.INITIALISING, jobs.Finished(AT)),
        (S.PENDING, jobs.Finished(AT, agent=True)),
        (S.RUNNING, jobs.OutputsStored(AT)),
        (S.RUNNING, jobs.Resumed(AT)),
        (S.POSTPROCESSING, jobs.Reattached(AT)),
        (S.SUCCESSFUL, jobs.Admitted(AT)),
        (S.CANCELLED, jobs.InputsReady(AT)),
        (S.FAILED, jobs.Finished(AT)),
    ],
)
def test_events_that_do_not_fit_the_state_are_refused(state: JobState, event: Any) -> None:
    machine = JobStateMachine(state)
    with pytest.raises(IllegalTransitionError):
        handle(machine, event)
    assert machine.state is state and len(machine.timeline) == 1


def test_a_resumed_job_stores_its_outputs_and_a_reattached_one_is_followed_again() -> None:
    _, out = feed(S.POSTPROCESSING, jobs.Resumed(AT))
    assert out == [[jobs.StoreOutputs()]]
    machine, out = feed(S.RUNNING, jobs.Reattached(AT), jobs.Finished(AT + 1))
    assert out[0] == [jobs.Execute(reattach=True)]
    assert kinds(out[1]) == ["Persist", "Release", "StoreOutputs"] and machine.state is S.POSTPROCESSING


# -- failures at each step ------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", LIVE)
@pytest.mark.parametrize("finish", [False, True])
def test_a_failure_in_any_live_state_records_the_reason(state: JobState, finish: bool) -> None:
    machine, out = feed(state, jobs.Failed(AT, "Input 'a': not found", finish=finish))
    assert machine.state is S.FAILED
    expected = [jobs.RecordError("Input 'a': not found"), jobs.Persist(lenient=True)]  # a full disk is no crash
    assert out == [expected + ([jobs.Finish()] if finish else [])]
    assert machine.timeline[-1] == {"state": "failed", "time": AT, "reason": "Input 'a': not found"}


@pytest.mark.parametrize("state", sorted(FINAL_STATES))
def test_a_failure_after_the_end_changes_nothing(state: JobState) -> None:
    machine, out = feed(state, jobs.Failed(AT, "late"), jobs.Failed(AT, "late", finish=True))
    assert out == [[], []] and machine.state is state and len(machine.timeline) == 1


@pytest.mark.parametrize(
    ("steps", "failed_in"),
    [
        ([], S.PENDING),  # e.g. the processor was undeployed meanwhile
        ([jobs.Dispatched(AT)], S.INITIALISING),  # an input is missing or cannot be decrypted
        ([jobs.Dispatched(AT), jobs.InputsReady(AT)], S.RUNNING),  # execute.sh exited with an error
        ([jobs.Dispatched(AT), jobs.InputsReady(AT), jobs.Finished(AT)], S.POSTPROCESSING),  # an output is bad
    ],
)
def test_failure_at_each_step_then_the_task_ends(steps: list[Any], failed_in: JobState) -> None:
    machine, _ = feed(S.PENDING, *steps)
    assert machine.state is failed_in
    assert kinds(handle(machine, jobs.Failed(AT, "x"))) == ["RecordError", "Persist"]
    assert handle(machine, jobs.TaskEnded(AT)) == [jobs.Cleanup(), jobs.Finish()]


def test_an_output_stored_succeeds_and_an_output_failed_fails() -> None:
    ok, _ = feed(S.POSTPROCESSING, jobs.OutputsStored(AT))
    bad, _ = feed(S.POSTPROCESSING, jobs.Failed(AT, "Output 'c' was not announced (trigger:output:c)"))
    assert (ok.state, bad.state) == (S.SUCCESSFUL, S.FAILED)
    assert bad.timeline[-1]["reason"].startswith("Output 'c'")


@pytest.mark.parametrize("state", LIVE)
def test_a_task_ending_early_releases_and_keeps_the_job(state: JobState) -> None:
    machine, out = feed(state, jobs.TaskEnded(AT))
    assert out == [[jobs.Cleanup()]] and machine.state is state  # e.g. the node stops: the restart decides


# -- cancel in every state ------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", LIVE)
def test_cancel_of_a_job_with_a_task_cancels_the_task(state: JobState) -> None:
    machine, out = feed(state, jobs.CancelRequested(AT, "cancelled by the user", has_task=True))
    assert out == [[jobs.CancelTask()]] and machine.state is state  # the task ends with `Cancelled`


@pytest.mark.parametrize("state", LIVE)
@pytest.mark.parametrize("reason", ["cancelled by the user", "processor undeployed"])
def test_cancel_of_a_queued_job_ends_it_at_once(state: JobState, reason: str) -> None:
    machine, out = feed(state, jobs.CancelRequested(AT, reason, has_task=False))
    assert out == [[jobs.Unqueue(), jobs.Persist(), jobs.Finish()]]
    assert machine.timeline[-1] == {"state": "cancelled", "time": AT, "reason": reason}


@pytest.mark.parametrize("state", sorted(FINAL_STATES))
@pytest.mark.parametrize("has_task", [False, True])
def test_cancel_of_a_final_job_does_nothing(state: JobState, has_task: bool) -> None:
    machine, out = feed(state, jobs.CancelRequested(AT, "cancelled by the user", has_task))
    assert out == [[]] and machine.state is state


@pytest.mark.parametrize("state", LIVE)
@pytest.mark.parametrize("finish", [False, True])
def test_a_cancelled_task_cancels_its_job_with_the_users_reason(state: JobState, finish: bool) -> None:
    machine, out = feed(state, jobs.Cancelled(AT, finish=finish))
    assert out == [[jobs.Persist(), *([jobs.Finish()] if finish else [])]]
    assert machine.timeline[-1]["reason"] == "cancelled by the user"


@pytest.mark.parametrize("state", [*LIVE, *sorted(FINAL_STATES)])
def test_a_stopping_node_leaves_a_cancelled_task_to_the_restart(state: JobState) -> None:
    machine, out = feed(state, jobs.Cancelled(AT, stopping=True, finish=True))
    assert out == [[]] and machine.state is state


def test_cancel_while_the_task_runs_then_its_end() -> None:
    machine, out = feed(
        S.RUNNING,
        jobs.CancelRequested(AT, "cancelled by the user", has_task=True),
        jobs.Cancelled(AT + 1),
        jobs.TaskEnded(AT + 2),
    )
    assert [kinds(i) for i in out] == [["CancelTask"], ["Persist"], ["Cleanup", "Finish"]]
    assert machine.state is S.CANCELLED


# -- waiting for a deployment ---------------------------------------------------------------------------------


def test_a_deployment_that_ends_well_queues_the_job() -> None:
    machine, out = feed(S.PENDING, jobs.Deployed(AT, "p", ready=True))
    assert out == [[jobs.Enqueue()]] and machine.state is S.PENDING


@pytest.mark.parametrize("error", ["install.sh exited with code 1", None, "undeployed"])
def test_a_deployment_that_failed_fails_the_job_with_its_reason(error: str | None) -> None:
    machine, out = feed(S.PENDING, jobs.Deployed(AT, "p", ready=False, error=error))
    reason = f"Processor p could not be deployed: {error}"
    assert out == [[jobs.RecordError(reason), jobs.Persist(lenient=True), jobs.Finish()]]
    assert machine.state is S.FAILED and machine.timeline[-1]["reason"] == reason


# -- restart decisions: every state x restartable x agent x re-attachable x a process left -------------------

RESTART = [
    # state, restartable, agent, reattachable, pid -> state after, instructions
    (S.PENDING, False, False, False, None, S.PENDING, ["Enqueue"]),
    (S.PENDING, True, False, False, None, S.PENDING, ["Enqueue"]),
    (S.PENDING, False, True, False, None, S.PENDING, ["Enqueue"]),
    (S.INITIALISING, False, False, False, None, S.FAILED, ["RecordError", "Persist", "Finish"]),
    (S.INITIALISING, True, False, False, None, S.PENDING, ["Persist", "Enqueue"]),
    (S.INITIALISING, False, True, False, None, S.PENDING, ["Persist", "Enqueue"]),  # no instance saw it
    (S.INITIALISING, False, False, True, None, S.FAILED, ["RecordError", "Persist", "Finish"]),
    (S.RUNNING, False, False, False, None, S.FAILED, ["RecordError", "Persist", "Finish"]),
    (S.RUNNING, False, False, False, 4242, S.FAILED, ["KillLeftover", "RecordError", "Persist", "Finish"]),
    (S.RUNNING, True, False, False, None, S.PENDING, ["Persist", "Enqueue"]),
    (S.RUNNING, True, False, False, 4242, S.PENDING, ["KillLeftover", "Persist", "Enqueue"]),
    (S.RUNNING, False, True, False, None, S.FAILED, ["RecordError", "Persist", "Finish"]),  # an instance had it
    (S.RUNNING, True, True, False, 4242, S.PENDING, ["KillLeftover", "Persist", "Enqueue"]),
    (S.RUNNING, False, False, True, None, S.RUNNING, ["StartTask"]),  # followed again on its backend
    (S.RUNNING, True, False, True, 4242, S.RUNNING, ["StartTask"]),
    (S.POSTPROCESSING, False, False, False, None, S.POSTPROCESSING, ["StartTask"]),
    (S.POSTPROCESSING, True, True, True, 4242, S.POSTPROCESSING, ["StartTask"]),
    (S.SUCCESSFUL, False, False, False, None, S.SUCCESSFUL, ["Finish"]),
    (S.FAILED, True, False, False, None, S.FAILED, ["Finish"]),
    (S.CANCELLED, False, False, True, 4242, S.CANCELLED, ["Finish"]),
]


@pytest.mark.parametrize(("state", "restartable", "agent", "reattachable", "pid", "after", "expected"), RESTART)
def test_restart_decisions(
    state: JobState,
    restartable: bool,
    agent: bool,
    reattachable: bool,
    pid: int | None,
    after: JobState,
    expected: list[str],
) -> None:
    machine, out = feed(state, jobs.NodeRestarted(AT, restartable, agent, reattachable, pid))
    assert machine.state is after
    assert kinds(out[0]) == expected
    if pid is not None and "KillLeftover" in expected:
        assert out[0][0] == jobs.KillLeftover(pid)
    if after is not state:
        reason = machine.timeline[-1]["reason"]
        assert machine.timeline[-1]["time"] == AT
        assert reason == ("node restarted" if after is S.FAILED else "node restarted: re-queued")
    else:
        assert len(machine.timeline) == 1
    if "StartTask" in expected:
        assert out[0][-1] == jobs.StartTask(reattach=state is S.RUNNING)


def test_a_failed_restart_records_node_restarted_as_the_error() -> None:
    _, out = feed(S.RUNNING, jobs.NodeRestarted(AT))
    assert jobs.RecordError("node restarted") in out[0]


def test_a_requeued_job_runs_again_from_the_start() -> None:
    machine, _ = feed(S.RUNNING, jobs.NodeRestarted(AT, restartable=True))
    out = handle(machine, jobs.Dispatched(AT + 1))
    assert kinds(out) == ["Persist", "PrepareInputs"] and machine.state is S.INITIALISING
    assert [t["state"] for t in machine.timeline] == ["running", "pending", "initialising"]


def test_not_an_event() -> None:
    with pytest.raises(TypeError):
        handle(JobStateMachine(), object())  # type: ignore[arg-type]


# -- dispatch order (the slot pools the pipeline dispatches from) ---------------------------------------------

DISPATCH = [
    # limit, per_user, jobs queued as (user, job) in order -> jobs in the order they take a slot
    (1, None, [("u", "1"), ("u", "2"), ("u", "3")], ["1", "2", "3"]),  # one user: submission order
    (1, None, [("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b1")], ["a1", "b1", "a2", "a3"]),  # round robin
    (1, None, [("a", "a1"), ("b", "b1"), ("c", "c1"), ("a", "a2")], ["a1", "b1", "c1", "a2"]),
    (2, None, [("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b1")], ["a1", "b1", "a2", "a3"]),  # fewest running
    (2, 1, [("a", "a1"), ("a", "a2"), ("b", "b1"), ("b", "b2")], ["a1", "b1", "a2", "b2"]),  # per-user bound
]


@pytest.mark.parametrize(("limit", "per_user", "queued", "order"), DISPATCH)
def test_dispatch_order(limit: int, per_user: int | None, queued: list[tuple[str, str]], order: list[str]) -> None:
    pool = SlotPool(limit, per_user)
    for user, job_id in queued:
        pool.add(user, job_id)
    started: list[str] = []
    while len(started) < len(queued):
        taken = list(iter(pool.next, None))  # the free slots are taken
        assert taken, f"nothing dispatched after {started}"
        started += taken
        for job_id in taken:  # then those jobs end
            assert pool.release(job_id)
    assert started == order


def test_a_cancelled_queued_job_is_never_dispatched() -> None:
    pool = SlotPool(1)
    for job_id in ("1", "2", "3"):
        pool.add("u", job_id)
    machine = JobStateMachine()
    assert handle(machine, jobs.CancelRequested(AT, "cancelled by the user", has_task=False))[0] == jobs.Unqueue()
    assert pool.remove("2")  # what `Unqueue` does
    assert [pool.next(), pool.release("1"), pool.next()] == ["1", True, "3"]


@pytest.mark.parametrize("module", ["jobs", "scheduler"])
def test_the_core_is_pure(module: str) -> None:
    import ast
    from pathlib import Path

    import saas.rti

    tree = ast.parse((Path(saas.rti.__file__).parent / f"{module}.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported & {"asyncio", "os", "subprocess", "sqlite3", "shutil"} == set()
