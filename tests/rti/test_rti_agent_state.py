"""The agent pool's pure machine (`saas.rti.agent_state`), fed events by hand: no process, no loop, no clock. In the
style of distributed's worker-state tests: each case feeds a short story and checks the instructions that come out
and the state left behind. The races a real pool can only hit by luck (answer vs timeout, exit while the job is being
sent, stop during start, cancel in every state, early trigger:done, events of an older run) are cases here."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

from saas.rti import agent_events, agent_state
from saas.rti.agent_events import (
    Answered,
    Backoff,
    BackoffOver,
    Broken,
    Closing,
    Ended,
    Event,
    Exited,
    Instruction,
    Kill,
    Ready,
    RecordStart,
    SavePids,
    Send,
    SendFailed,
    Settle,
    Spawn,
    Spawned,
    SpawnFailed,
    Start,
    StartDone,
    StartJobTimer,
    StartRecorded,
    StartStartupTimer,
    StartupTimedOut,
    Stop,
    Submitted,
    TimedOut,
    parse_trigger_line,
)
from saas.rti.agent_state import MAX_START_FAILURES, STOPPED, AgentState

CRASH = "Agent instance 0 exited with code 13: boom"
TIMEOUT = "The agent did not finish the job within 1 s (instance restarted)"
CANCEL = "The job was cancelled (instance restarted)"


def feed(state: AgentState, *events: Event) -> list[Instruction]:
    out: list[Instruction] = []
    for event in events:
        out += state.handle(event)
    return out


def started(instances: int = 1, job_timeout: float | None = None) -> AgentState:
    """A pool whose instances all run (generation 1) and are idle."""
    state = AgentState(instances, job_timeout)
    feed(state, Start())
    for i in range(instances):
        feed(state, Spawned(i, 1), Ready(i, 1))
    assert not state.starting
    return state


def running(key: int = 0, job_timeout: float | None = None) -> AgentState:
    """One instance holding job `key`, its line sent."""
    state = started(1, job_timeout)
    feed(state, Submitted(key, f"job-{key}"), StartRecorded(key))
    assert state.jobs[key].state == "running"
    return state


def states(state: AgentState) -> list[str]:
    return [i.state for i in state.instances]


# -- start --------------------------------------------------------------------------------------------------------


def test_start_spawns_every_instance_and_is_done_when_all_are_ready() -> None:
    state = AgentState(2)
    assert feed(state, Start()) == [Spawn(0, 1), Spawn(1, 1)]
    assert feed(state, Spawned(0, 1)) == [SavePids(), StartStartupTimer(0, 1)]
    assert feed(state, Spawned(1, 1), Ready(1, 1)) == [SavePids(), StartStartupTimer(1, 1)]
    assert feed(state, Ready(0, 1)) == [StartDone(None)]
    assert states(state) == ["idle", "idle"] and list(state.idle) == state.instances
    assert [i.restarts for i in state.instances] == [0, 0]


@pytest.mark.parametrize(
    ("events", "reason"),
    [
        ([Spawned(0, 1), Exited(0, 1, 3, "x")], "Agent instance 0 exited with code 3 before it was ready"),
        ([Spawned(0, 1), StartupTimedOut(0, 1, "no ready"), Exited(0, 1, -9, "x")], "no ready"),
        ([SpawnFailed(0, 1, "Agent instance 0 could not be started: no bash")], "could not be started: no bash"),
    ],
    ids=["exit-before-ready", "startup-timeout", "spawn-error"],
)
def test_a_failed_first_start_fails_the_start(events: list[Event], reason: str) -> None:
    state = AgentState(2)
    feed(state, Start(), Spawned(1, 1), Ready(1, 1))
    out = feed(state, *events)
    done = [i for i in out if isinstance(i, StartDone)]
    assert len(done) == 1 and done[0].error is not None and done[0].error.endswith(reason) and done[0].index == 0
    assert state.instances[0].state == "failed" and state.broken == done[0].error
    assert Broken(done[0].error, False) in out  # refused from now on, nobody notified (the deployment fails)


def test_startup_timeout_kills_and_the_exit_fails_the_start() -> None:
    state = AgentState(1)
    feed(state, Start(), Spawned(0, 1))
    assert feed(state, StartupTimedOut(0, 1, "no ready")) == [Kill(0, 1)]
    assert feed(state, Ready(0, 1)) == []  # too late: it is being killed
    assert feed(state, Exited(0, 1, -9, "killed")) == [StartDone("no ready", 0), Broken("no ready", False)]


def test_stop_during_start_ends_the_start_at_once() -> None:
    """Fixed: stopping a pool whose instances are still starting left `start()` waiting (up to the startup
    timeout) for instances nobody would run any more."""
    state = AgentState(2)
    feed(state, Start(), Spawned(0, 1))
    out = feed(state, Stop())
    assert StartDone(STOPPED) in out and Broken(STOPPED, False) in out
    assert feed(state, Spawned(1, 1)) == [SavePids(), Kill(1, 1)]  # spawned after the stop: killed at once
    assert feed(state, Ready(0, 1)) == []
    feed(state, Exited(0, 1, -15, "x"), Exited(1, 1, -9, "x"))
    assert states(state) == ["stopped", "stopped"]


def test_stop_before_start_starts_nothing() -> None:
    state = AgentState(1)
    feed(state, Stop())
    assert feed(state, Start()) == [StartDone(STOPPED)]
    assert states(state) == ["stopped"] and state.instances[0].generation == 0


# -- jobs ---------------------------------------------------------------------------------------------------------


def test_a_job_is_recorded_then_sent_then_answered() -> None:
    state = started(1, job_timeout=5)
    assert feed(state, Submitted(7, "job-7")) == [RecordStart(7, 0)]
    assert state.instances[0].state == "busy" and state.holder(0, 1) is state.jobs[7]
    assert feed(state, StartRecorded(7)) == [Send(7, 0, 1), StartJobTimer(7)]
    assert feed(state, Answered(0, 1)) == [Settle(7, None)]
    assert state.instances[0].state == "idle" and state.instances[0].served == 1
    assert state.holder(0, 1) is None
    assert feed(state, Ended(7, "x")) == [] and state.jobs == {}


def test_trigger_error_settles_with_its_text_and_keeps_the_instance() -> None:
    state = running()
    assert feed(state, Answered(0, 1, "a must not be 15")) == [Settle(0, "a must not be 15")]
    assert state.instances[0].state == "idle" and state.instances[0].generation == 1


def test_no_job_timer_without_a_timeout() -> None:
    state = started(1)
    assert feed(state, Submitted(0, "j"), StartRecorded(0)) == [RecordStart(0, 0), Send(0, 0, 1)]


def test_jobs_go_first_come_first_served_to_free_instances() -> None:
    state = started(2)
    out = feed(state, *(Submitted(k, f"job-{k}") for k in range(4)))
    assert out == [RecordStart(0, 0), RecordStart(1, 1)]
    assert [j.key for j in state.queue] == [2, 3]
    feed(state, StartRecorded(1))
    assert feed(state, Answered(1, 1)) == [Settle(1, None), RecordStart(2, 1)]  # the freed instance, the next job


def test_no_job_starts_while_the_pool_starts() -> None:
    state = AgentState(1)
    feed(state, Start(), Spawned(0, 1))
    assert feed(state, Submitted(0, "j")) == []
    assert feed(state, Ready(0, 1)) == [StartDone(None), RecordStart(0, 0)]


@pytest.mark.parametrize(
    "trigger",
    [Answered(0, 1), Answered(0, 1, "oops")],
    ids=["done", "error"],
)
def test_an_early_answer_before_the_job_was_sent_is_ignored(trigger: Answered) -> None:
    """Fixed: a trigger:done (or error) printed while the job's start was still being recorded (so before the
    instance had the job: a stray line of the previous job) settled the job as if the agent had run it."""
    state = started(1)
    feed(state, Submitted(0, "j"))
    assert feed(state, trigger) == []
    assert state.jobs[0].state == "recording" and state.instances[0].served == 0
    assert feed(state, StartRecorded(0)) == [Send(0, 0, 1)]


def test_an_answer_without_a_job_is_ignored() -> None:
    state = started(1)
    assert feed(state, Answered(0, 1), Answered(0, 1, "x")) == []
    assert state.instances[0].served == 0


def test_recording_the_start_failed_releases_the_instance() -> None:
    state = started(1)
    feed(state, Submitted(0, "a"), Submitted(1, "b"))
    assert feed(state, StartRecorded(0, "database is locked")) == [Settle(0, "database is locked"), RecordStart(1, 0)]


def test_the_folder_could_not_be_handed_over() -> None:
    state = started(1)
    feed(state, Submitted(0, "a"), Submitted(1, "b"), StartRecorded(0))
    assert feed(state, SendFailed(0, "no space")) == [Settle(0, "no space"), RecordStart(1, 0)]


# -- races --------------------------------------------------------------------------------------------------------


def test_answer_before_timeout() -> None:
    state = running(job_timeout=1)
    assert feed(state, Answered(0, 1)) == [Settle(0, None)]
    assert feed(state, TimedOut(0, TIMEOUT)) == []  # the timer's late event
    assert state.instances[0].state == "idle"


def test_timeout_before_answer_kills_the_instance() -> None:
    """Fixed: the instance of a timed-out job was only killed once the job's caller came back (`_end`); now the
    timeout kills it at once."""
    state = running(job_timeout=1)
    assert feed(state, TimedOut(0, TIMEOUT)) == [Settle(0, TIMEOUT), Kill(0, 1)]
    assert feed(state, Answered(0, 1)) == []  # too late
    assert state.shown_state(state.instances[0]) == "restarting"
    assert feed(state, Exited(0, 1, -9, "x")) == [Spawn(0, 2)]  # killed, not crashed: restarted at once
    assert state.instances[0].failures == 0 and state.instances[0].served == 0


def test_exit_while_the_start_is_recorded() -> None:
    """The instance dies between being given the job and being sent it: the job is lost, never sent (not even to
    the restarted instance)."""
    state = started(1)
    feed(state, Submitted(0, "j"))
    assert feed(state, Exited(0, 1, 13, CRASH)) == [Settle(0, CRASH), Backoff(0, 1, 0.2)]
    assert feed(state, StartRecorded(0)) == []
    assert feed(state, BackoffOver(0, 1), Spawned(0, 2)) == [Spawn(0, 2), SavePids(), StartStartupTimer(0, 2)]
    assert feed(state, Ready(0, 2)) == []  # idle, and nothing to send
    assert state.instances[0].restarts == 1 and state.instances[0].state == "idle"


def test_exit_while_running_fails_the_job_with_the_reason() -> None:
    state = running()
    assert feed(state, Exited(0, 1, 13, CRASH)) == [Settle(0, CRASH), Backoff(0, 1, 0.2)]
    assert state.jobs[0].outcome == "lost" and state.instances[0].state == "restarting"


# -- cancel (the caller ends the job) in every state --------------------------------------------------------------


def _queued() -> AgentState:
    state = running(0)
    feed(state, Submitted(1, "b"))
    return state


def _recording() -> AgentState:
    state = started(1)
    feed(state, Submitted(1, "b"))
    return state


def _running() -> AgentState:
    return running(1)


def _answered() -> AgentState:
    state = running(1)
    feed(state, Answered(0, 1))
    return state


def _lost() -> AgentState:
    state = running(1)
    feed(state, Exited(0, 1, 13, CRASH))
    return state


def _timed_out() -> AgentState:
    state = running(1, job_timeout=1)
    feed(state, TimedOut(1, TIMEOUT))
    return state


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (_queued, [Settle(1, CANCEL)]),
        (_recording, [Settle(1, CANCEL)]),
        (_running, [Settle(1, CANCEL), Kill(0, 1)]),
        (_answered, []),
        (_lost, []),
        (_timed_out, []),
    ],
    ids=["queued", "recording", "running", "answered", "lost", "timed-out"],
)
def test_cancel_in_every_state(setup: Callable[[], AgentState], expected: list[Instruction]) -> None:
    state = setup()
    assert feed(state, Ended(1, CANCEL)) == expected
    holder = state.holder(0, state.instances[0].generation)  # no line goes to the job any more
    assert all(job.key != 1 for job in state.queue) and (holder is None or holder.key != 1)


def test_cancel_while_recording_releases_the_instance_once_recorded_without_sending() -> None:
    state = _recording()
    feed(state, Submitted(2, "c"), Ended(1, CANCEL))
    assert feed(state, StartRecorded(1)) == [RecordStart(2, 0)]  # not sent; the next job has the instance
    assert 1 not in state.jobs


def test_cancel_while_running_restarts_the_instance_at_once() -> None:
    state = _running()
    feed(state, Ended(1, CANCEL))
    assert feed(state, Exited(0, 1, -9, "x")) == [Spawn(0, 2)]
    assert feed(state, Spawned(0, 2), Ready(0, 2)) == [SavePids(), StartStartupTimer(0, 2)]
    assert state.instances[0].restarts == 1 and state.jobs == {}


# -- restarts -----------------------------------------------------------------------------------------------------


def test_restart_after_a_crash_takes_the_waiting_job() -> None:
    state = started(1)
    assert feed(state, Exited(0, 1, 1, CRASH)) == [Backoff(0, 1, 0.2)]
    assert feed(state, Submitted(0, "j")) == []  # waits for the restart
    assert feed(state, BackoffOver(0, 1)) == [Spawn(0, 2)]
    assert feed(state, Spawned(0, 2), Ready(0, 2)) == [SavePids(), StartStartupTimer(0, 2), RecordStart(0, 0)]


def test_backoff_grows_with_failures_and_an_answer_resets_it() -> None:
    state = started(1)
    delays = []
    for generation in (1, 2, 3):
        out = feed(state, Exited(0, generation, 1, CRASH))
        delays += [i.delay for i in out if isinstance(i, Backoff)]
        feed(state, BackoffOver(0, generation), Spawned(0, generation + 1), Ready(0, generation + 1))
    assert delays == [0.2, 0.4, 0.8]
    feed(state, Submitted(0, "j"), StartRecorded(0), Answered(0, 4))
    assert feed(state, Exited(0, 4, 1, CRASH)) == [Backoff(0, 4, 0.2)]


def test_spawn_errors_during_a_restart_are_retried() -> None:
    """Fixed: an error while spawning the restarted instance (say the sandbox could not be set up) ended its
    supervisor, leaving the instance 'restarting' forever; it now counts as a failed start and is retried."""
    state = started(1)
    feed(state, Exited(0, 1, 1, CRASH), BackoffOver(0, 1))
    assert feed(state, SpawnFailed(0, 2, "could not be started: EAGAIN")) == [Backoff(0, 2, 0.4)]
    assert feed(state, BackoffOver(0, 2), Spawned(0, 3), Ready(0, 3)) == [
        Spawn(0, 3),
        SavePids(),
        StartStartupTimer(0, 3),
    ]
    assert state.instances[0].state == "idle" and state.instances[0].restarts == 1


def test_instances_that_cannot_restart_are_given_up_and_the_pool_breaks() -> None:
    state = started(2)
    feed(state, Submitted(0, "a"), Submitted(1, "b"), Submitted(2, "c"))
    feed(state, StartRecorded(0), StartRecorded(1))
    out: list[Instruction] = []
    for index in (0, 1):
        out += feed(state, Exited(index, 1, 1, CRASH))
        for generation in range(2, MAX_START_FAILURES + 1):
            out += feed(state, BackoffOver(index, generation - 1), Spawned(index, generation))
            out += feed(state, Exited(index, generation, 7, "x"))
    assert states(state) == ["failed", "failed"]
    reason = "Every instance of the agent failed to restart: Agent instance 1 exited with code 7 before it was ready"
    assert state.broken == reason
    assert out[-2:] == [Broken(reason, True), Settle(2, reason)]  # the owner is told; the waiting job fails
    assert feed(state, Submitted(3, "d")) == [Settle(3, reason)]


@pytest.mark.parametrize(
    "event",
    [
        Answered(0, 1),
        Answered(0, 1, "x"),
        Exited(0, 1, 0, "x"),
        Ready(0, 1),
        Spawned(0, 1),
        StartupTimedOut(0, 1, "x"),
        BackoffOver(0, 1),
        SpawnFailed(0, 1, "x"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_events_of_an_older_run_are_ignored(event: Event) -> None:
    """Instance 0 was killed (generation 1) and runs again as generation 2 holding a job: nothing of run 1 may
    touch run 2 or its job."""
    state = running(0)
    feed(state, Ended(0, CANCEL), Exited(0, 1, -9, "x"), Spawned(0, 2), Ready(0, 2))
    feed(state, Submitted(1, "b"), StartRecorded(1))
    assert feed(state, event) == []
    instance = state.instances[0]
    assert (instance.state, instance.generation, instance.served) == ("busy", 2, 0)
    assert state.holder(0, 2) is state.jobs[1] and state.holder(0, 1) is None


# -- stopping -----------------------------------------------------------------------------------------------------


def test_stop_fails_waiting_jobs_and_refuses_new_ones() -> None:
    state = running(0)
    feed(state, Submitted(1, "b"))
    assert feed(state, Stop()) == [Broken(STOPPED, False), Settle(1, STOPPED)]
    assert feed(state, Submitted(2, "c")) == [Settle(2, STOPPED)]
    assert feed(state, Exited(0, 1, -15, "Agent instance 0 exited with code -15")) == [
        Settle(0, "Agent instance 0 exited with code -15")
    ]
    assert states(state) == ["stopped"]


def test_closing_restarts_nothing_and_kills_nothing() -> None:
    state = started(2, job_timeout=1)
    feed(state, Submitted(0, "a"), StartRecorded(0), Submitted(1, "b"), StartRecorded(1))
    feed(state, Closing())
    assert feed(state, Ended(0, CANCEL)) == [Settle(0, CANCEL)]  # `stop()` ends the instance
    assert feed(state, TimedOut(1, TIMEOUT)) == [Settle(1, TIMEOUT)]
    assert feed(state, Exited(0, 1, 1, CRASH)) == []
    assert states(state)[0] == "stopped"


def test_a_restart_waiting_for_its_backoff_is_stopped() -> None:
    state = started(1)
    feed(state, Exited(0, 1, 1, CRASH))
    feed(state, Stop())
    assert feed(state, BackoffOver(0, 1)) == []
    assert states(state) == ["stopped"]


# -- trigger lines ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        ("trigger:ready", ("ready", None)),
        ("trigger:done", ("done", None)),
        ("trigger:error:a must not be 15", ("error", "a must not be 15")),
        ("trigger:error:  ", ("error", "The agent reported an error")),
        ("trigger:output:c", None),
        ("trigger:done now", None),
        ("hello", None),
    ],
)
def test_trigger_lines(line: str, parsed: tuple[str, str | None] | None) -> None:
    assert parse_trigger_line(line) == parsed


@pytest.mark.parametrize("module", [agent_state, agent_events], ids=lambda m: m.__name__)
def test_the_machine_is_pure(module: object) -> None:
    """No I/O, no loop, no clock: it imports data structures and its own vocabulary only."""
    tree = ast.parse(Path(module.__file__).read_text())  # type: ignore[attr-defined]
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "collections", "dataclasses", "typing", "saas.rti.agent_events"}
