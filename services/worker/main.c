/* main.c - sluice-worker: runs task instances of one queue; SIGTERM drains, a second kills. */
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sluice/log.h"
#include "worker.h"

/* SIGTERM/SIGINT seen so far (capped at 2): 1 = drain, 2 = stop now. */
static volatile sig_atomic_t stop_signals;

static void on_stop_signal(int sig)
{
	(void)sig;
	if (stop_signals < 2)
		stop_signals++;
}

static void install_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop_signal; /* no SA_RESTART: blocking calls return early */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	/* A closed Kafka or Redis socket must be an error return, not a dead worker. Tasks get
	 * every signal back at SIG_DFL (sl_exec resets them). */
	signal(SIGPIPE, SIG_IGN);
}

int main(int argc, char **argv)
{
	struct worker_config cfg;
	struct worker *w = NULL;
	char errstr[512] = "";
	enum sl_err err;

	memset(&cfg, 0, sizeof(cfg));
	err = sl_config_load(worker_config_table, &cfg, argc, argv, NULL, 0, NULL, errstr,
			     sizeof(errstr));
	if (err == SL_ERR_CANCELLED) { /* --help */
		err = SL_OK;
		goto out;
	}
	if (err == SL_OK)
		err = worker_config_finish(&cfg, errstr, sizeof(errstr));
	if (err != SL_OK) {
		fprintf(stderr, "sluice-worker: %s\n", errstr);
		goto out;
	}
	sl_log_init("worker", sl_log_level_parse(cfg.log_level));
	install_signals();
	/* Before any thread: curl_global_init is not thread-safe (http_get runs on slots). */
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (!(w = worker_new(&cfg, &stop_signals, errstr, sizeof(errstr)))) {
		if (stop_signals) {
			err = SL_OK;
		} else {
			SL_ERROR("cannot start: %s", errstr);
			err = SL_ERR_CONFIG;
		}
		goto out;
	}
	err = worker_run(w);
out:
	worker_destroy(w);
	sl_config_free(worker_config_table, &cfg);
	curl_global_cleanup();
	return (int)err;
}
