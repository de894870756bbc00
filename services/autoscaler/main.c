/* main.c - sluice-autoscaler: starts and drains workers per pool from queue lag and busy slots. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "autoscaler.h"
#include "sluice/log.h"

/* Signals seen: 1 = stop (drain the workers), 2 or more = stop waiting for them. */
static volatile sig_atomic_t stop_signals;

static void on_stop(int sig)
{
	(void)sig;
	if (stop_signals < 2)
		stop_signals++;
}

static void on_hup(int sig)
{
	(void)sig; /* the pools file is read at start only; a restart applies changes */
}

int main(int argc, char **argv)
{
	struct autoscaler_config cfg;
	struct autoscaler *a = NULL;
	struct sigaction sa;
	enum sl_err err;
	char errstr[512] = "";

	memset(&cfg, 0, sizeof(cfg));
	err = sl_config_load(autoscaler_config_table, &cfg, argc, argv, NULL, 0, NULL, errstr,
			     sizeof(errstr));
	if (err == SL_ERR_CANCELLED) {
		err = SL_OK; /* --help */
		goto out;
	}
	if (err != SL_OK) {
		fprintf(stderr, "sluice-autoscaler: %s\n", errstr);
		goto out;
	}
	sl_log_init("sluice-autoscaler", sl_log_level_parse(cfg.log_level));
	if (!(cfg.health = sl_health_new(cfg.http, "autoscaler", errstr, sizeof(errstr)))) {
		fprintf(stderr, "sluice-autoscaler: %s\n", errstr);
		err = SL_ERR_CONFIG;
		goto out;
	}

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_stop;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_hup;
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);

	if (!(a = autoscaler_new(&cfg, &stop_signals, &err, errstr, sizeof(errstr)))) {
		if (err == SL_ERR_CANCELLED)
			err = SL_OK;
		else
			SL_ERROR("%s", errstr);
		goto out;
	}
	SL_INFO("running: pools from %s, every %ldms", cfg.pools, cfg.interval_ms);
	sl_health_set_ready(cfg.health, 1);
	autoscaler_run(a, &stop_signals);
	sl_health_set_ready(cfg.health, 0);
	SL_INFO("stopped");
out:
	autoscaler_destroy(a);
	sl_health_destroy(cfg.health);
	sl_config_free(autoscaler_config_table, &cfg);
	return (int)err;
}
