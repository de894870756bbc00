/* help.c - the text of `sluice --help` and `sluice help CMD`; docs/cli.md says the same. */
#include <string.h>

#include "cli.h"

struct help {
	const char *name;
	const char *text;
};

static const char overview[] =
	"usage: sluice [GLOBAL OPTIONS] COMMAND [ARGS]\n"
	"\n"
	"Commands:\n"
	"  submit FLOW [-p NAME=VALUE]... [--wait]  request a run of a flow (name or .yaml file)\n"
	"  status RUN [--all]                       a run and its task instances\n"
	"  watch RUN [--interval DUR]               live progress of a run until it ends\n"
	"  runs [--limit N] [--flow F] [--state S]  recent runs, newest first\n"
	"  cancel RUN                               ask the planner to cancel a run\n"
	"  pools                                    autoscaler pools: workers, lag, last decision\n"
	"  flows validate FILE...                   check flow files\n"
	"  flows list [--dir DIR]                   the flows in a directory\n"
	"  topics create [--partitions N]           create sluice's Kafka topics\n"
	"  help [COMMAND]                           this text, or one command's\n"
	"  version                                  the version (also --version)\n"
	"\n"
	"Global options (before or after the command):\n"
	"  --brokers LIST   Kafka bootstrap servers [env SLUICE_KAFKA_BROKERS, 127.0.0.1:9092]\n"
	"  --redis URL      Redis URL [env SLUICE_REDIS_URL, redis://127.0.0.1:6379/0]\n"
	"  --json           print JSON for scripts instead of tables\n"
	"  -h, --help       help; `sluice COMMAND --help` for one command\n"
	"  SLUICE_KAFKA_<PROP> env vars pass librdkafka properties (TLS, SASL ...);\n"
	"  SLUICE_LOG_LEVEL=debug|info|warn|error sets the libraries' log level (warn).\n"
	"\n"
	"Exit codes:\n"
	"  0  success; with --wait: the run SUCCEEDED\n"
	"  1  the run FAILED (or an unexpected internal error)\n"
	"  2  usage error, invalid flow file, unknown run\n"
	"  3  the run was CANCELLED\n"
	"  4  the run was REJECTED by the planner\n"
	"  5  timed out waiting (--timeout, or no planner accepted the run in 60s)\n"
	"  6  cannot reach Kafka or Redis\n";

static const struct help helps[] = {
	{"submit",
	 "usage: sluice submit FLOW [-p NAME=VALUE]... [--idempotency-key KEY]\n"
	 "                     [--intent normal|reprocess|test_subset] [--wait] [--timeout DUR]\n"
	 "\n"
	 "Requests a run on sluice.runs.requested and prints its run id first, on its own\n"
	 "line. FLOW is a flow name the planner knows, or a .yaml/.yml file: the file is\n"
	 "checked here (exit 2 with file:line:col: reason) and sent along with the request.\n"
	 "\n"
	 "  -p, --param NAME=VALUE   a parameter; VALUE is JSON when it parses (10, true,\n"
	 "                           [1,2], \"x\"), else a plain string. Repeatable.\n"
	 "  --idempotency-key KEY    requests with the same key make one run: a repeat is\n"
	 "                           reported as \"duplicate of RUN\" and that run is followed\n"
	 "  --intent I               normal (default), reprocess, test_subset\n"
	 "  --wait                   follow the run until it ends (progress on stderr); the\n"
	 "                           exit code tells how it ended\n"
	 "  --timeout DUR            give up waiting after DUR (default 10m; 30s, 2h ...)\n"
	 "\n"
	 "With --json, one object {run_id, flow, state, ...} is printed instead.\n"
	 "Exit: 0 sent (or SUCCEEDED with --wait), 1 FAILED, 2 usage or invalid flow file,\n"
	 "3 CANCELLED, 4 REJECTED, 5 timed out, 6 Kafka or Redis unreachable.\n"},
	{"status",
	 "usage: sluice status RUN [--all] [--json]\n"
	 "\n"
	 "Shows a run (flow, state, times, parameters, error) and a table of its task\n"
	 "instances in task order then map index. A task with more than 50 instances shows\n"
	 "its first 20 and a summary line unless --all is given.\n"
	 "\n"
	 "  --all    every instance\n"
	 "  --json   {run: {...}, tasks: [{task, index, state, attempt, output, error, worker,\n"
	 "           started_ms, finished_ms}]} with every instance\n"
	 "\n"
	 "Exit: 0 found, 2 unknown run, 6 Redis unreachable.\n"},
	{"watch",
	 "usage: sluice watch RUN [--interval DUR] [--timeout DUR] [--json]\n"
	 "\n"
	 "Follows a run until it ends. On a terminal: a progress bar (done/total, failed,\n"
	 "running, elapsed) and one line per task (done/total of its instances), redrawn\n"
	 "in place. Otherwise a plain line whenever the counts change (at least every 30s)\n"
	 "and the final one. A run not recorded within 10s is unknown (exit 2); a\n"
	 "DUPLICATE run is followed to the run it duplicates.\n"
	 "\n"
	 "  -i, --interval DUR   poll period (default 500ms on a terminal, else 1s)\n"
	 "  --timeout DUR        give up after DUR (default: never); the run goes on\n"
	 "  --json               one JSON object per line per change: {run_id, flow, state,\n"
	 "                       done, total, failed, running, elapsed_ms, tasks, final}\n"
	 "\n"
	 "Exit (as submit --wait): 0 SUCCEEDED, 1 FAILED, 2 usage or unknown run,\n"
	 "3 CANCELLED, 4 REJECTED, 5 timed out, 6 Redis unreachable, 130 Ctrl-C.\n"},
	{"runs",
	 "usage: sluice runs [--limit N] [--flow FLOW] [--state STATE] [--json]\n"
	 "\n"
	 "Lists runs, newest first: RUN FLOW STATE TASKS CREATED DURATION.\n"
	 "\n"
	 "  --limit N      at most N runs (default 20; 0 for all)\n"
	 "  --flow FLOW    only runs of this flow\n"
	 "  --state STATE  only runs in this state (PENDING, RUNNING, SUCCEEDED, FAILED,\n"
	 "                 CANCELLED, REJECTED)\n"
	 "  --json         an array of {id, flow, state, tasks_done, tasks_total, created_ms,\n"
	 "                 ended_ms}\n"
	 "\n"
	 "Exit: 0, 2 usage error, 6 Redis unreachable.\n"},
	{"cancel",
	 "usage: sluice cancel RUN\n"
	 "\n"
	 "Sends a CANCEL_RUN control message for RUN on sluice.control; the planner stops\n"
	 "dispatching and ends the run CANCELLED (a run that already ended is left alone).\n"
	 "\n"
	 "Exit: 0 requested, 2 usage error, 6 Kafka unreachable.\n"},
	{"pools",
	 "usage: sluice pools [--json]\n"
	 "\n"
	 "Shows the autoscaler's pools: POOL QUEUE WORKERS DESIRED LAG BUSY REASON (the\n"
	 "reason of its last decision). --json adds backend, min, max and updated_ms.\n"
	 "\n"
	 "Exit: 0, 6 Redis unreachable.\n"},
	{"flows",
	 "usage: sluice flows validate FILE...\n"
	 "       sluice flows list [--dir DIR]\n"
	 "\n"
	 "validate  parses each file and prints \"FILE: ok (flow NAME, N tasks)\" or the error\n"
	 "          as file:line:col: reason. Exit 2 if any file is invalid.\n"
	 "list      NAME TASKS TRIGGER FILE of each *.yaml / *.yml file in DIR (default\n"
	 "          $SLUICE_FLOWS_DIR, else ./examples). Invalid files are reported on\n"
	 "          stderr and make the exit code 2.\n"
	 "\n"
	 "--json prints an array of {file, ok, flow, tasks, trigger, error}.\n"},
	{"topics",
	 "usage: sluice topics create [--partitions N] [--queue QUEUE]...\n"
	 "\n"
	 "Creates the missing sluice topics: sluice.runs.requested, sluice.tasks.default,\n"
	 "sluice.tasks.results, sluice.runs.events, sluice.control, sluice.autoscaler.events,\n"
	 "sluice.deadletter. Existing topics are left alone.\n"
	 "\n"
	 "  --partitions N   partitions of each new topic (default 8)\n"
	 "  --queue QUEUE    also create sluice.tasks.QUEUE (repeatable)\n"
	 "\n"
	 "Exit: 0, 2 usage error, 6 Kafka unreachable or creation refused.\n"},
	{NULL, NULL},
};

void help_main(FILE *fp)
{
	fputs(overview, fp);
}

int help_command(const char *name, FILE *fp)
{
	const struct help *h;

	for (h = helps; h->name; h++) {
		if (!strcmp(h->name, name)) {
			fputs(h->text, fp);
			return 0;
		}
	}
	return -1;
}
