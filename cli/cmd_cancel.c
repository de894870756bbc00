/* cmd_cancel.c - `sluice cancel RUN`: a CANCEL_RUN control message for the planner. */
#include <stdlib.h>

#include "cli.h"
#include "sluice/kafka.h"
#include "sluice/util.h"
#include "sluice/v1/sluice.pb-c.h"

int cmd_cancel(struct cli *cli, int argc, char **argv)
{
	static const struct cli_opt opts[] = {{NULL, 0, 0, 0}};
	Sluice__V1__Control msg = SLUICE__V1__CONTROL__INIT;
	struct cli_args a;
	const char *run = NULL;
	char trace[64];
	uint8_t *buf = NULL;
	size_t len;
	int id, rc = CLI_USAGE;

	cli_args_init(&a, argc, argv, "cancel");
	while ((id = cli_args_next(&a, opts, cli)) != CLI_ARG_END) {
		if (id == CLI_ARG_ERROR)
			goto out;
		if (id == CLI_ARG_HELP) {
			help_command("cancel", stdout);
			rc = CLI_OK;
			goto out;
		}
		if (run) {
			rc = cli_usage_error("cancel", "one run at a time");
			goto out;
		}
		run = a.arg;
	}
	if (!run) {
		rc = cli_usage_error("cancel", "which run? (sluice runs lists them)");
		goto out;
	}
	if (cli_check_run_id("cancel", run) < 0)
		goto out;

	sl_id_new("t-", trace, sizeof(trace));
	msg.schema_version = 1;
	msg.trace_id = trace;
	msg.kind = SLUICE__V1__CONTROL_KIND__CONTROL_CANCEL_RUN;
	msg.run_id = (char *)run;
	msg.reason = "cli";
	msg.at_ms = sl_now_ms();
	len = sluice__v1__control__get_packed_size(&msg);
	if (!(buf = malloc(len ? len : 1))) {
		rc = CLI_FAILED;
		goto out;
	}
	sluice__v1__control__pack(&msg, buf);
	if ((rc = cli_kafka_send(cli, SL_TOPIC_CONTROL, run, buf, len)) != CLI_OK)
		goto out;
	if (cli->json) {
		json_t *o = json_pack("{s:s, s:b}", "run_id", run, "cancel_requested", 1);
		rc = out_json(o);
		json_decref(o);
	} else {
		printf("cancel requested for %s\n", run);
	}
out:
	free(buf);
	return rc;
}
