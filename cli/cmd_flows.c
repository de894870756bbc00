/* cmd_flows.c - `sluice flows validate|list`: check flow files with the planner's own parser. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "sluice/flow.h"

#define MAX_FILES 10000
#define PATH_CAP 4096

enum { OPT_DIR = 1 };

struct checked {
	struct sl_flow *flow; /* NULL when invalid */
	char error[1024];
};

static void check_file(const char *path, struct checked *c)
{
	c->error[0] = '\0';
	c->flow = sl_flow_load(path, c->error, sizeof(c->error));
	if (!c->flow && !c->error[0])
		snprintf(c->error, sizeof(c->error), "%.900s: cannot be read", path);
}

static void trigger_text(const struct sl_flow *f, char *buf, size_t cap)
{
	if (f->trigger_dir)
		snprintf(buf, cap, "files %s/%s", f->trigger_dir,
			 f->trigger_glob ? f->trigger_glob : "*");
	else
		snprintf(buf, cap, "-");
}

static json_t *file_json(const char *path, const struct checked *c)
{
	json_t *o = json_object();
	char trig[PATH_CAP + 64];

	if (!o)
		return NULL;
	out_json_set_str(o, "file", path);
	json_object_set_new(o, "ok", json_boolean(c->flow != NULL));
	out_json_set_str(o, "flow", c->flow ? c->flow->name : NULL);
	json_object_set_new(o, "tasks", c->flow ? json_integer((json_int_t)c->flow->ntasks)
						: json_null());
	if (c->flow)
		trigger_text(c->flow, trig, sizeof(trig));
	out_json_set_str(o, "trigger", c->flow && strcmp(trig, "-") ? trig : NULL);
	out_json_set_str(o, "description", c->flow ? c->flow->description : NULL);
	out_json_set_str(o, "error", c->flow ? NULL : c->error);
	return o;
}

static int flows_validate(struct cli *cli, struct cli_args *a)
{
	static const struct cli_opt opts[] = {{NULL, 0, 0, 0}};
	json_t *array = NULL;
	const char **files = NULL;
	size_t nfiles = 0, i;
	int id, bad = 0, rc = CLI_USAGE;

	/* Options first (a trailing --json counts), then the files in order. */
	if (!(files = calloc((size_t)a->argc + 1, sizeof(char *)))) {
		rc = CLI_FAILED;
		goto out;
	}
	while ((id = cli_args_next(a, opts, cli)) != CLI_ARG_END) {
		if (id == CLI_ARG_ERROR)
			goto out;
		if (id == CLI_ARG_HELP) {
			help_command("flows", stdout);
			rc = CLI_OK;
			goto out;
		}
		files[nfiles++] = a->arg;
	}
	if (!nfiles) {
		rc = cli_usage_error("flows validate", "which files?");
		goto out;
	}
	if (cli->json && !(array = json_array())) {
		rc = out_json(NULL);
		goto out;
	}
	for (i = 0; i < nfiles; i++) {
		struct checked c;

		check_file(files[i], &c);
		if (!c.flow)
			bad = 1;
		if (array)
			json_array_append_new(array, file_json(files[i], &c));
		else if (c.flow)
			printf("%s: ok (flow %s, %zu task%s)\n", files[i], c.flow->name,
			       c.flow->ntasks, c.flow->ntasks == 1 ? "" : "s");
		else
			printf("%s\n", c.error);
		sl_flow_destroy(c.flow);
	}
	if (array)
		out_json(array);
	rc = bad ? CLI_USAGE : CLI_OK;
out:
	free(files);
	json_decref(array);
	return rc;
}

static int has_flow_suffix(const char *name)
{
	size_t n = strlen(name);

	return (n > 5 && !strcmp(name + n - 5, ".yaml")) ||
	       (n > 4 && !strcmp(name + n - 4, ".yml"));
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int flows_list(struct cli *cli, struct cli_args *a)
{
	static const struct cli_opt opts[] = {{"dir", 'd', 1, OPT_DIR}, {NULL, 0, 0, 0}};
	static const char *const headers[] = {"NAME", "TASKS", "TRIGGER", "FILE"};
	const char *dir = getenv("SLUICE_FLOWS_DIR");
	struct out_table *table = NULL;
	json_t *array = NULL;
	struct dirent *de;
	DIR *d = NULL;
	char **names = NULL;
	size_t n = 0, i;
	int id, bad = 0, rc = CLI_USAGE;

	if (!dir || !*dir)
		dir = "examples";
	while ((id = cli_args_next(a, opts, cli)) != CLI_ARG_END) {
		if (id == CLI_ARG_ERROR)
			goto out;
		if (id == CLI_ARG_HELP) {
			help_command("flows", stdout);
			rc = CLI_OK;
			goto out;
		}
		if (id == CLI_ARG_WORD) {
			rc = cli_usage_error("flows list", "unexpected argument \"%s\"", a->arg);
			goto out;
		}
		dir = a->arg;
	}
	if (!(d = opendir(dir))) {
		fprintf(stderr, "sluice flows list: cannot open directory %s: %s\n", dir,
			strerror(errno));
		goto out;
	}
	rc = CLI_FAILED;
	if (!(names = calloc(MAX_FILES, sizeof(char *))))
		goto out;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' || !has_flow_suffix(de->d_name))
			continue;
		if (n == MAX_FILES) {
			fprintf(stderr, "sluice flows list: more than %d files; listing the first\n",
				MAX_FILES);
			break;
		}
		if (!(names[n] = strdup(de->d_name)))
			goto out;
		n++;
	}
	qsort(names, n, sizeof(char *), cmp_str);
	if (cli->json ? !(array = json_array()) : !(table = out_table_new(4, headers)))
		goto out;
	for (i = 0; i < n; i++) {
		char path[PATH_CAP], trig[PATH_CAP + 64], ntasks[24];
		struct checked c;

		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, names[i]) >= sizeof(path))
			continue;
		check_file(path, &c);
		if (!c.flow) {
			bad = 1;
			fprintf(stderr, "%s\n", c.error);
		}
		if (array) {
			json_array_append_new(array, file_json(path, &c));
		} else if (c.flow) {
			const char *cells[4] = {c.flow->name, ntasks, trig, path};
			snprintf(ntasks, sizeof(ntasks), "%zu", c.flow->ntasks);
			trigger_text(c.flow, trig, sizeof(trig));
			out_table_add(table, cells);
		}
		sl_flow_destroy(c.flow);
	}
	if (array)
		out_json(array);
	else if (n == 0)
		fprintf(stderr, "no *.yaml flows in %s\n", dir);
	else
		out_table_print(table, stdout);
	rc = bad ? CLI_USAGE : CLI_OK;
out:
	if (d)
		closedir(d);
	for (i = 0; names && i < n; i++)
		free(names[i]);
	free(names);
	out_table_destroy(table);
	json_decref(array);
	return rc;
}

int cmd_flows(struct cli *cli, int argc, char **argv)
{
	static const struct cli_opt opts[] = {{NULL, 0, 0, 0}};
	struct cli_args a;
	int id;

	cli_args_init(&a, argc, argv, "flows");
	id = cli_args_next(&a, opts, cli);
	if (id == CLI_ARG_HELP) {
		help_command("flows", stdout);
		return CLI_OK;
	}
	if (id == CLI_ARG_ERROR)
		return CLI_USAGE;
	if (id != CLI_ARG_WORD)
		return cli_usage_error("flows", "validate or list?");
	if (!strcmp(a.arg, "validate")) {
		a.cmd = "flows validate";
		return flows_validate(cli, &a);
	}
	if (!strcmp(a.arg, "list")) {
		a.cmd = "flows list";
		return flows_list(cli, &a);
	}
	return cli_usage_error("flows", "no subcommand \"%s\" (validate or list)", a.arg);
}
