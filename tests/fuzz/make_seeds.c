/* make_seeds.c - writes the seed corpus of fuzz_proto: one file per example message, byte 0
 * selecting the type as fuzz_proto.c reads it. Usage: fuzz_make_seeds DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/v1/sluice.pb-c.h"

enum { SEL_RUN_REQUEST = 0, SEL_TASK_DISPATCH = 1, SEL_TASK_RESULT = 2, SEL_CONTROL = 3 };

/* Writes DIR/name: the selector byte and m packed. Returns 0 or -1. */
static int write_seed(const char *dir, const char *name, unsigned char sel,
		      const ProtobufCMessage *m)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	unsigned char *buf = malloc(len + 1);
	char path[4096];
	FILE *f = NULL;
	int rc = -1;

	if (!buf)
		goto out;
	buf[0] = sel;
	protobuf_c_message_pack(m, buf + 1);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (!(f = fopen(path, "wb")) || fwrite(buf, 1, len + 1, f) != len + 1) {
		perror(path);
		goto out;
	}
	rc = 0;
out:
	if (f && fclose(f) != 0)
		rc = -1;
	free(buf);
	return rc;
}

int main(int argc, char **argv)
{
	static const char hello[] = "flow: hello\nparams:\n  name: world\ntasks:\n  greet:\n"
				    "    builtin: echo\n    input: \"hello, ${params.name}\"\n";
	static const char mapped[] = "flow: m\nparams: {n: {type: int, default: 3}}\ntasks:\n"
				     "  inc: {map: {x: \"range(${params.n})\"}, command: [echo, "
				     "\"${x}\"]}\n  total: {builtin: sum, input: "
				     "\"${tasks.inc.outputs}\"}\n";
	const char *dir = argc > 1 ? argv[1] : ".";
	int bad = 0;

	{
		Sluice__V1__Param p1 = SLUICE__V1__PARAM__INIT, p2 = SLUICE__V1__PARAM__INIT;
		Sluice__V1__Param *ps[] = {&p1, &p2};
		Sluice__V1__RunRequest r = SLUICE__V1__RUN_REQUEST__INIT;

		r.schema_version = 1;
		r.trace_id = "t-1";
		r.flow = "diamond";
		r.requested_by = "cli";
		r.requested_at_ms = 1763776000000;
		bad |= write_seed(dir, "run_request_by_name", SEL_RUN_REQUEST, &r.base);
		r.run_id = "r-abc.1";
		r.idempotency_key = "inbox/a.csv@sha256";
		r.intent = SLUICE__V1__INTENT__INTENT_REPROCESS;
		p1.name = "n";
		p1.json_value = "10";
		p2.name = "sleep";
		p2.json_value = "0.5";
		r.params = ps;
		r.n_params = 2;
		bad |= write_seed(dir, "run_request_params", SEL_RUN_REQUEST, &r.base);
		r.flow = "hello";
		r.flow_source.data = (uint8_t *)hello;
		r.flow_source.len = strlen(hello);
		p1.name = "name";
		p1.json_value = "\"fuzz\"";
		r.n_params = 1;
		bad |= write_seed(dir, "run_request_flow_source", SEL_RUN_REQUEST, &r.base);
		r.flow = "m";
		r.flow_source.data = (uint8_t *)mapped;
		r.flow_source.len = strlen(mapped);
		p1.name = "n";
		p1.json_value = "\"4\"";
		bad |= write_seed(dir, "run_request_mapped_source", SEL_RUN_REQUEST, &r.base);
	}
	{
		char *args[] = {"sh", "-c", "echo $(( $1 + 1 ))", "_", "7"};
		Sluice__V1__EnvVar e = SLUICE__V1__ENV_VAR__INIT;
		Sluice__V1__EnvVar *es[] = {&e};
		Sluice__V1__TaskDispatch d = SLUICE__V1__TASK_DISPATCH__INIT;

		d.schema_version = 1;
		d.trace_id = "t-1";
		d.run_id = "r-abc.1";
		d.flow = "diamond";
		d.task = "inc";
		d.map_index = 7;
		d.attempt = 1;
		d.queue = "default";
		d.kind = SLUICE__V1__TASK_KIND__TASK_KIND_COMMAND;
		d.argv = args;
		d.n_argv = 5;
		e.name = "NAME";
		e.value = "bob";
		d.env = es;
		d.n_env = 1;
		d.input = (ProtobufCBinaryData){.data = (uint8_t *)"[1,2]", .len = 5};
		d.timeout_ms = 300000;
		d.lease_ttl_ms = 30000;
		d.dispatched_at_ms = 1763776000000;
		d.max_output_bytes = 65536;
		d.priority = 1;
		bad |= write_seed(dir, "task_dispatch_command", SEL_TASK_DISPATCH, &d.base);
		d.kind = SLUICE__V1__TASK_KIND__TASK_KIND_BUILTIN;
		d.task = "total";
		d.map_index = -1;
		d.attempt = 3;
		d.argv = NULL;
		d.n_argv = 0;
		d.env = NULL;
		d.n_env = 0;
		d.builtin = "sum";
		d.priority = -1;
		bad |= write_seed(dir, "task_dispatch_builtin", SEL_TASK_DISPATCH, &d.base);
	}
	{
		Sluice__V1__TaskResult r = SLUICE__V1__TASK_RESULT__INIT;

		r.schema_version = 1;
		r.trace_id = "t-1";
		r.run_id = "r-abc.1";
		r.task = "inc";
		r.map_index = 7;
		r.attempt = 1;
		r.worker_id = "w-host-1";
		r.status = SLUICE__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED;
		r.output = (ProtobufCBinaryData){.data = (uint8_t *)"8", .len = 1};
		r.started_at_ms = 1763776000000;
		r.finished_at_ms = 1763776000123;
		bad |= write_seed(dir, "task_result_succeeded", SEL_TASK_RESULT, &r.base);
		r.status = SLUICE__V1__TASK_STATUS__TASK_STATUS_FAILED;
		r.exit_code = -9;
		r.output = (ProtobufCBinaryData){0};
		r.error = "killed by signal 9";
		r.stderr_tail = (ProtobufCBinaryData){.data = (uint8_t *)"oops\n", .len = 5};
		bad |= write_seed(dir, "task_result_failed", SEL_TASK_RESULT, &r.base);
	}
	{
		Sluice__V1__Control c = SLUICE__V1__CONTROL__INIT;

		c.schema_version = 1;
		c.trace_id = "t-1";
		c.kind = SLUICE__V1__CONTROL_KIND__CONTROL_CANCEL_RUN;
		c.run_id = "r-abc.1";
		c.reason = "cancelled by alice";
		c.at_ms = 1763776000000;
		bad |= write_seed(dir, "control_cancel", SEL_CONTROL, &c.base);
		c.kind = SLUICE__V1__CONTROL_KIND__CONTROL_DRAIN_WORKER;
		c.run_id = "";
		c.worker_id = "w-host-1";
		c.reason = "scale down";
		bad |= write_seed(dir, "control_drain", SEL_CONTROL, &c.base);
	}
	return bad ? 1 : 0;
}
