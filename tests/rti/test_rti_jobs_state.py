"""The pure job state machine: legal paths, illegal transitions, the timeline, restart decisions."""

from __future__ import annotations

import pytest

from saas.rti.jobs import FINAL_STATES, IllegalTransitionError, JobState, JobStateMachine, recover

S = JobState


def test_happy_path_timeline() -> None:
    m = JobStateMachine()
    for state in (S.INITIALISING, S.RUNNING, S.POSTPROCESSING, S.SUCCESSFUL):
        m.transition(state, f"to {state.value}", at=1)
    assert m.final
    assert [t["state"] for t in m.timeline] == ["pending", "initialising", "running", "postprocessing", "successful"]
    assert m.timeline[-1] == {"state": "successful", "time": 1, "reason": "to successful"}


@pytest.mark.parametrize("state", [S.PENDING, S.INITIALISING, S.RUNNING, S.POSTPROCESSING])
@pytest.mark.parametrize("ending", [S.FAILED, S.CANCELLED])
def test_every_non_final_state_may_fail_or_be_cancelled(state: JobState, ending: JobState) -> None:
    m = JobStateMachine(state)
    m.transition(ending, "x")
    assert m.state is ending and m.final


@pytest.mark.parametrize("final", sorted(FINAL_STATES))
@pytest.mark.parametrize("target", list(JobState))
def test_final_states_are_final(final: JobState, target: JobState) -> None:
    m = JobStateMachine(final)
    with pytest.raises(IllegalTransitionError):
        m.transition(target)
    assert m.state is final


@pytest.mark.parametrize(
    ("start", "target"),
    [
        (S.PENDING, S.RUNNING),
        (S.PENDING, S.SUCCESSFUL),
        (S.PENDING, S.POSTPROCESSING),
        (S.INITIALISING, S.SUCCESSFUL),
        (S.RUNNING, S.SUCCESSFUL),
        (S.RUNNING, S.INITIALISING),
        (S.POSTPROCESSING, S.RUNNING),
        (S.POSTPROCESSING, S.PENDING),
    ],
)
def test_illegal_transitions_raise(start: JobState, target: JobState) -> None:
    m = JobStateMachine(start)
    with pytest.raises(IllegalTransitionError) as e:
        m.transition(target)
    assert e.value.details == {"from": start.value, "to": target.value}
    assert m.state is start and len(m.timeline) == 1


@pytest.mark.parametrize("state", [S.INITIALISING, S.RUNNING])
def test_recover_fails_a_job_whose_process_died(state: JobState) -> None:
    m = JobStateMachine(state)
    assert recover(m, restartable=False) is S.FAILED
    assert m.timeline[-1]["reason"] == "node restarted"


@pytest.mark.parametrize("state", [S.INITIALISING, S.RUNNING])
def test_recover_requeues_restartable_jobs(state: JobState) -> None:
    m = JobStateMachine(state)
    assert recover(m, restartable=True) is S.PENDING
    assert m.timeline[-1]["reason"].startswith("node restarted")


@pytest.mark.parametrize("state", [S.PENDING, S.POSTPROCESSING, *sorted(FINAL_STATES)])
def test_recover_keeps_other_states(state: JobState) -> None:
    m = JobStateMachine(state)
    assert recover(m, restartable=False) is state
    assert len(m.timeline) == 1


def test_restore_keeps_timeline() -> None:
    m = JobStateMachine()
    m.transition(S.INITIALISING, "x")
    restored = JobStateMachine.restore(m.state.value, m.timeline)
    assert restored.state is S.INITIALISING and restored.timeline == m.timeline


def test_job_ids_are_alphanumeric_and_distinct() -> None:
    from saas.rti.service import new_job_id

    ids = {new_job_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == 22 and i.isalnum() for i in ids)
