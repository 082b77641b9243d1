"""Parser model -> protobuf, and the fingerprint of a workflow version.

A spec is built once per version. Its fingerprint is the hash of the *layout*: the
deterministic serialization of the spec without ``schedule.next_run_time`` (which moves
with the clock) and without source positions (a comment added above a workflow, or an
edit of a shared module that defines jobs, moves lines but changes no job, edge,
command or schedule). Same layout, same fingerprint, across restarts and machines.
"""

from __future__ import annotations

import hashlib

from google.protobuf.timestamp_pb2 import Timestamp

from legacy_parser import model
from legacy_parser.tokens import JobToken, run_tokens
from token_fetcher._proto import token_fetcher_pb2 as pb

FINGERPRINT_HEX_CHARS = 32


def timestamp(epoch_seconds: int) -> Timestamp:
    return Timestamp(seconds=epoch_seconds)


def overrun_policy(policy: model.OverrunPolicy) -> int:
    return pb.OverrunPolicy.Value(f"OVERRUN_POLICY_{policy.name}")


def error_kind(kind: model.ErrorKind) -> int:
    return pb.ErrorKind.Value(f"ERROR_KIND_{kind.name}")


def parse_error(error: model.WorkflowError) -> pb.ParseError:
    return pb.ParseError(kind=error_kind(error.kind), message=error.message,
                         cluster=error.cluster, workflow=error.workflow, job=error.job,
                         file=error.file, line=error.line)


def schedule(value: model.Schedule) -> pb.Schedule:
    return pb.Schedule(
        reference_time=timestamp(value.reference_epoch),
        recurrence_seconds=value.recurrence_seconds,
        overrun_policy=overrun_policy(value.overrun_policy),
        max_running_instances=value.max_running_instances,
        emails=value.emails,
    )


def job_spec(job: model.Job) -> pb.JobSpec:
    # The parser keeps Pinball's attribute names (retry_delay_sec); the contract names a
    # duration with its unit spelled out (retry_delay_seconds).
    return pb.JobSpec(
        name=job.name,
        kind=pb.JOB_KIND_CONDITION if job.is_condition else pb.JOB_KIND_JOB,
        template=job.template,
        template_name=job.template_name,
        parents=job.parents,
        children=job.children,
        inputs=job.inputs,
        outputs=job.outputs,
        command=pb.CommandTemplate(segments=job.command.segments),
        priority=job.priority,
        score=job.score,
        token_priority=job.token_priority,
        max_attempts=job.max_attempts,
        retry_delay_seconds=job.retry_delay_sec,
        warn_timeout_seconds=job.warn_timeout_sec,
        abort_timeout_seconds=job.abort_timeout_sec,
        emails=job.emails,
        executor=job.executor,
        executor_config=[pb.KeyValue(key=k, value=v) for k, v in job.executor_config],
        write_lock=job.write_lock,
        cleanup_template=job.cleanup_template,
        source=pb.SourceLocation(file=job.file, line=job.line),
    )


def workflow_spec(workflow: model.Workflow) -> pb.WorkflowSpec:
    return pb.WorkflowSpec(
        cluster=workflow.cluster,
        name=workflow.name,
        jobs=[job_spec(job) for job in workflow.jobs],
        final_job=workflow.final_job,
        schedule=schedule(workflow.schedule),
        notify_emails=workflow.notify_emails,
        source=pb.SourceLocation(file=workflow.file, line=workflow.line),
        format=pb.DEFINITION_FORMAT_PYTHON if workflow.final_job else pb.DEFINITION_FORMAT_JSON,
    )


def fingerprint(spec: pb.WorkflowSpec) -> str:
    """Hash of the spec's deterministic bytes without the workflow's and the jobs' source
    positions; ``spec`` must not carry next_run_time."""
    layout = pb.WorkflowSpec()
    layout.CopyFrom(spec)
    layout.ClearField("source")
    for job in layout.jobs:
        job.ClearField("source")
    data = layout.SerializeToString(deterministic=True)
    return hashlib.sha256(data).hexdigest()[:FINGERPRINT_HEX_CHARS]


def job_token(token: JobToken) -> pb.JobToken:
    return pb.JobToken(
        name=token.name, job=token.job, payload_name=token.payload_name, inputs=token.inputs,
        outputs=token.outputs, command=token.command, priority=token.priority,
        max_attempts=token.max_attempts, retry_delay_seconds=token.retry_delay_sec,
        warn_timeout_seconds=token.warn_timeout_sec,
        abort_timeout_seconds=token.abort_timeout_sec,
        emails=token.emails, is_condition=token.is_condition,
        cleanup_template=token.cleanup_template,
    )


def job_tokens_response(workflow: model.Workflow, fingerprint_value: str, run_epoch: int,
                        jobs: frozenset[str] | None = None) -> pb.GetJobTokensResponse:
    tokens = run_tokens(workflow, run_epoch)
    schedule_token = tokens.schedule
    return pb.GetJobTokensResponse(
        cluster=workflow.cluster,
        workflow=workflow.name,
        fingerprint=fingerprint_value,
        run_time=timestamp(run_epoch),
        instance=tokens.instance,
        end_date=tokens.end_date,
        jobs=[job_token(token) for token in tokens.jobs if jobs is None or token.job in jobs],
        schedule=pb.ScheduleToken(
            name=schedule_token.name,
            next_run_time=timestamp(schedule_token.next_run_epoch),
            recurrence_seconds=schedule_token.recurrence_seconds,
            overrun_policy=overrun_policy(schedule_token.overrun_policy),
            workflow=schedule_token.workflow,
            emails=schedule_token.emails,
            max_running_instances=schedule_token.max_running_instances,
        ),
        events=[pb.EventToken(name=event.name, job=event.job) for event in tokens.events
                if jobs is None or event.job in jobs],
    )


def message_field(field_number: int, serialized: bytes) -> bytes:
    """A serialized message as field ``field_number`` of another, in protobuf's wire
    format: the field's key (wire type 2, length-delimited), the length, the bytes.

    Appended to a serialized message, it sets that field as parsing ``serialized`` would:
    the wire format's merge rule. Answers built so carry a kept serialized spec without
    parsing it, copying it and serializing it again (protobuf's Python API has no public
    way to set a message field from bytes without parsing them).
    """
    return _varint(field_number << 3 | 2) + _varint(len(serialized)) + serialized


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
