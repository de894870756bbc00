/* e2e_examples.c - the seed examples shipped in examples/ run end to end on the real stack
 * (nino downloads over a local HTTP server, the GitHub-archive ETL with retries and its `big`
 * queue, the taxi ingestion with its cursor and intents, the scheduled diamond), and the CLI's
 * `watch` and `status` against them. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <poll.h>
#include <pty.h>

#include "e2e.h"
#include "sluice/util.h"

#define EXAMPLES SLUICE_SOURCE_DIR "/examples"
#define SCRIPTS_PARAM "scripts=" SLUICE_SOURCE_DIR "/examples/scripts"

extern char **environ;

static pid_t planner, workers[2];
static const char *work_dir;

static void start_services(void)
{
	/* Every flow but the scheduled one is submitted as a file; the planner loads
	 * examples/scheduled so that the every-minute diamond fires on its own. */
	const char *pargs[] = {"--flows-dir", EXAMPLES "/scheduled", "--lease-ttl", "3s", NULL};
	const char *w1[] = {"--slots", "4", "--id", "e2e-ex-w1", "--work-dir", NULL, NULL};
	const char *w2[] = {"--slots", "4", "--id", "e2e-ex-w2", "--work-dir", NULL, NULL};

	e2e_require_env();
	work_dir = e2e_tmpdir("examples-work");
	w1[5] = w2[5] = work_dir;
	planner = e2e_spawn("examples-planner", "sluice-planner", pargs, NULL);
	workers[0] = e2e_spawn("examples-worker1", "sluice-worker", w1, NULL);
	workers[1] = e2e_spawn("examples-worker2", "sluice-worker", w2, NULL);
	ck_assert_int_gt(planner, 0);
	ck_assert_int_gt(workers[0], 0);
	ck_assert_int_gt(workers[1], 0);
}

static void stop_services(void)
{
	e2e_stop(workers[0], SIGTERM, 15000);
	e2e_stop(workers[1], SIGTERM, 15000);
	e2e_stop(planner, SIGTERM, 15000);
}

/* ---- helpers ---- */

/* A new empty directory under the session's temp dir (a rerun in the same session must not
 * find the files of the last one). Static-lifetime path. */
static const char *fresh_dir(const char *name)
{
	char unique[256];

	snprintf(unique, sizeof(unique), "%s-%d-%lld", name, (int)getpid(), (long long)sl_now_ms());
	return e2e_tmpdir(unique);
}

/* Returns NULL when `sluice flows validate file` accepts it, else the validator's message
 * (caller frees): a feature another part of the engine has not shipped yet shows up here. */
static char *validate_error(const char *file)
{
	const char *args[] = {"flows", "validate", file, NULL};
	char *out = NULL, *err = NULL, *msg = NULL;
	int code = e2e_cli(&out, &err, args);

	if (code != 0) {
		size_t n = strlen(out ? out : "") + strlen(err ? err : "") + 2;
		if ((msg = malloc(n)))
			snprintf(msg, n, "%s%s", out ? out : "", err ? err : "");
	}
	free(out);
	free(err);
	return msg;
}

/* True (after printing why) when file does not validate because of a feature that is not
 * there yet; any other validation error fails the test. */
static int feature_missing(const char *file, const char *feature)
{
	char *msg = validate_error(file);
	int missing;

	if (!msg)
		return 0;
	missing = strstr(msg, "not supported yet") || strstr(msg, "unknown builtin");
	ck_assert_msg(missing, "%s does not validate: %.1000s", file, msg);
	printf("SKIP: %s needs %s, which the engine does not support yet: %s", file, feature, msg);
	fflush(stdout);
	free(msg);
	return 1;
}

/* Submits with --wait; args after the flow: extra CLI words (NULL-terminated). Returns the
 * exit code; *run is the run id (caller frees). */
static int submit_wait(const char *flow, const char *const *extra, char **run)
{
	const char *args[64] = {"submit", flow, "--wait", "--timeout", "5m"};
	char *out = NULL, *nl;
	int n = 5, code;

	for (size_t i = 0; extra && extra[i] && n < 62; i++)
		args[n++] = extra[i];
	args[n] = NULL;
	code = e2e_cli(&out, NULL, args);
	if (out && (nl = strchr(out, '\n')))
		*nl = '\0';
	*run = out;
	return code;
}

/* Submits without waiting; returns the run id (caller frees). */
static char *submit(const char *flow, const char *const *extra)
{
	const char *args[64] = {"submit", flow};
	char *out = NULL, *nl;
	int n = 2;

	for (size_t i = 0; extra && extra[i] && n < 62; i++)
		args[n++] = extra[i];
	args[n] = NULL;
	ck_assert_int_eq(e2e_cli(&out, NULL, args), 0);
	ck_assert_ptr_nonnull(out);
	if ((nl = strchr(out, '\n')))
		*nl = '\0';
	return out;
}

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	ck_assert_msg(f != NULL, "cannot write %s: %s", path, strerror(errno));
	ck_assert_int_eq(fwrite(data, 1, len, f), len);
	ck_assert_int_eq(fclose(f), 0);
}

/* Reads a whole file (at most 16 MiB); caller frees; NULL when it cannot be read. */
static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && n < (16L << 20) &&
	    fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1))) {
		*len = fread(buf, 1, (size_t)n, f);
		buf[*len] = '\0';
	}
	fclose(f);
	return buf;
}

static void mkdirs(const char *path)
{
	char tmp[4096];

	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p == '/') {
			*p = '\0';
			mkdir(tmp, 0755);
			*p = '/';
		}
	}
	mkdir(tmp, 0755);
}

static void sha256_hex(const void *data, size_t len, char hex[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;

	ck_assert_int_eq(EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL), 1);
	for (unsigned i = 0; i < mdlen; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

static long count_lines(const char *s)
{
	long n = 0;

	for (; s && *s; s++)
		n += *s == '\n';
	return n;
}

/* Field key of element i of a JSON array of objects. */
static long long elem_int(json_t *arr, size_t i, const char *key)
{
	return (long long)json_integer_value(json_object_get(json_array_get(arr, i), key));
}

static const char *elem_str(json_t *arr, size_t i, const char *key)
{
	const char *v = json_string_value(json_object_get(json_array_get(arr, i), key));

	return v ? v : "(none)";
}

static char *ti_worker(const char *run, const char *task, int idx)
{
	char *w = e2e_ti_field(run, task, idx, "worker");

	ck_assert_msg(w != NULL, "%s[%d] has no worker", task, idx);
	return w;
}

static int port_open(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

/* `python3 -m http.server` on a free loopback port serving dir; waits until it answers. */
static pid_t start_http_server(const char *dir, int *port)
{
	char portbuf[16], logpath[4096];
	const char *argv[] = {"python3", "-m", "http.server", portbuf, "--bind", "127.0.0.1",
			      "--directory", dir, NULL};
	posix_spawn_file_actions_t fa;
	pid_t pid = -1;
	int64_t deadline;

	*port = e2e_free_port();
	snprintf(portbuf, sizeof(portbuf), "%d", *port);
	snprintf(logpath, sizeof(logpath), "%s/logs/examples-http.log", getenv("SLUICE_TEST_TMP"));
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	ck_assert_int_eq(posix_spawnp(&pid, "python3", &fa, NULL, (char *const *)argv, environ), 0);
	posix_spawn_file_actions_destroy(&fa);
	deadline = sl_mono_ms() + e2e_ms(20000);
	while (!port_open(*port) && sl_mono_ms() < deadline)
		usleep(100000);
	ck_assert_msg(port_open(*port), "the HTTP server did not come up on port %d", *port);
	return pid;
}

static void stop_child(pid_t pid)
{
	int status;

	if (pid <= 0)
		return;
	kill(pid, SIGTERM);
	waitpid(pid, &status, 0);
}

/* ---- download_images ---- */

START_TEST(download_images_fetches_twelve_months)
{
	const char *root = fresh_dir("examples-nino"), *workdir = work_dir;
	char dir[4096], path[4200], url[128], hex[12][65], expect[4096];
	char *bodies[12], *run = NULL, *got;
	size_t sizes[12], len;
	int port;
	pid_t http;
	json_t *files;

	if (feature_missing(EXAMPLES "/download_images.yaml", "the http_get built-in"))
		return;
	/* twelve distinct bodies, laid out like the seed's URL_FORMAT */
	for (int m = 1; m <= 12; m++) {
		sizes[m - 1] = 1000 + (size_t)m * 3571;
		bodies[m - 1] = malloc(sizes[m - 1]);
		for (size_t i = 0; i < sizes[m - 1]; i++)
			bodies[m - 1][i] = (char)((i * 31 + (size_t)m * 7 + i / 97) & 0xff);
		snprintf(dir, sizeof(dir), "%s/2022%02d0800/current/images", root, m);
		mkdirs(dir);
		snprintf(path, sizeof(path), "%s/nino34.rescaling.ENSMEAN.png", dir);
		write_file(path, bodies[m - 1], sizes[m - 1]);
		sha256_hex(bodies[m - 1], sizes[m - 1], hex[m - 1]);
	}
	http = start_http_server(root, &port);
	snprintf(url, sizeof(url), "base_url=http://127.0.0.1:%d", port);
	{
		const char *extra[] = {"-p", "year=2022", "-p", url, NULL};
		int code = submit_wait(EXAMPLES "/download_images.yaml", extra, &run);
		stop_child(http);
		ck_assert_msg(code == 0, "download_images exited %d", code);
	}
	ck_assert_int_eq(atoi(e2e_run_field(run, "tasks_total")), 12 + 12 + 1);
	files = e2e_task_output(run, "files", -1);
	ck_assert_msg(json_is_array(files) && json_array_size(files) == 12, "files output");
	for (int m = 1; m <= 12; m++) {
		json_t *o = e2e_task_output(run, "download", m - 1);
		const char *p;

		ck_assert_msg(json_is_object(o), "download[%d] output is not an object", m - 1);
		snprintf(expect, sizeof(expect), "%s/%s/data/2022%02d.png", workdir, run, m);
		p = json_string_value(json_object_get(o, "path"));
		ck_assert_str_eq(p, expect);
		ck_assert_str_eq(json_string_value(json_array_get(files, (size_t)m - 1)), expect);
		ck_assert_int_eq(json_integer_value(json_object_get(o, "bytes")), sizes[m - 1]);
		ck_assert_str_eq(json_string_value(json_object_get(o, "sha256")), hex[m - 1]);
		got = read_file(expect, &len);
		ck_assert_msg(got != NULL, "%s was not written", expect);
		ck_assert_int_eq(len, sizes[m - 1]);
		ck_assert_msg(!memcmp(got, bodies[m - 1], len), "%s differs from the served file",
			      expect);
		free(got);
		json_decref(o);
		free(bodies[m - 1]);
	}
	json_decref(files);
	free(run);
}
END_TEST

/* ---- github_archive ---- */

#define GH_DAYS 2
#define GH_FILES (GH_DAYS * 24)
#define GH_LATE 29 /* the file that appears only after its first attempt failed */

/* Writes data (len < 64 KiB) as a gzip file with one stored deflate block: no zlib needed
 * by the test, and any gzip reader takes it. */
static void write_gzip(const char *path, const char *data, size_t len)
{
	unsigned char hdr[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3}, blk[5], tail[8];
	uint32_t crc = 0xffffffffu;
	FILE *f = fopen(path, "wb");

	ck_assert_msg(f != NULL && len < 65536, "cannot write %s", path);
	for (size_t i = 0; i < len; i++) {
		crc ^= (unsigned char)data[i];
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1)));
	}
	crc ^= 0xffffffffu;
	blk[0] = 1; /* BFINAL, stored */
	blk[1] = (unsigned char)(len & 0xff);
	blk[2] = (unsigned char)(len >> 8);
	blk[3] = (unsigned char)(~len & 0xff);
	blk[4] = (unsigned char)((~len >> 8) & 0xff);
	for (int k = 0; k < 4; k++) {
		tail[k] = (unsigned char)(crc >> (8 * k));
		tail[4 + k] = (unsigned char)((uint32_t)len >> (8 * k));
	}
	ck_assert_int_eq(fwrite(hdr, 1, 10, f), 10);
	ck_assert_int_eq(fwrite(blk, 1, 5, f), 5);
	ck_assert_int_eq(fwrite(data, 1, len, f), len);
	ck_assert_int_eq(fwrite(tail, 1, 8, f), 8);
	ck_assert_int_eq(fclose(f), 0);
}

/* Writes hour file i (0..GH_FILES) of 01-01-2015 / 02-01-2015: i % 3 + 1 PushEvents with
 * i % 2 + 1 commits each, a WatchEvent, a PushEvent without commits and a bad line. Returns
 * the commit rows it holds. */
static long gh_write(const char *dir, int i)
{
	char path[4096], body[16384];
	long rows = 0;
	int n = 0;

	snprintf(path, sizeof(path), "%s/2015-01-0%d-%d.json.gz", dir, i / 24 + 1, i % 24);
	for (int e = 0; e < i % 3 + 1; e++) {
		n += snprintf(body + n, sizeof(body) - (size_t)n,
			      "{\"type\":\"PushEvent\",\"actor\":{\"login\":\"user%d\"},"
			      "\"repo\":{\"name\":\"org/repo%d\"},\"created_at\":"
			      "\"2015-01-0%dT%02d:00:%02dZ\",\"payload\":{\"commits\":[",
			      i, e, i / 24 + 1, i % 24, e);
		for (int c = 0; c < i % 2 + 1; c++)
			n += snprintf(body + n, sizeof(body) - (size_t)n,
				      "%s{\"message\":\"fix %d.%d, \\\"quoted\\\"\","
				      "\"author\":{\"name\":\"Author %d\"}}",
				      c ? "," : "", i, c, c);
		n += snprintf(body + n, sizeof(body) - (size_t)n, "]}}\n");
		rows += i % 2 + 1;
	}
	n += snprintf(body + n, sizeof(body) - (size_t)n,
		      "{\"type\":\"WatchEvent\",\"actor\":{\"login\":\"w\"}}\n"
		      "{\"type\":\"PushEvent\",\"actor\":{\"login\":\"x\"},\"repo\":"
		      "{\"name\":\"y\"},\"created_at\":\"z\",\"payload\":{}}\n"
		      "not json at all\n");
	write_gzip(path, body, (size_t)n);
	return rows;
}

static int gh_idx_of(const char *run, const char *name)
{
	json_t *list = e2e_task_output(run, "create_list", -1);
	int idx = -1;

	ck_assert_msg(json_is_array(list), "create_list output is not an array");
	for (size_t i = 0; i < json_array_size(list); i++)
		if (!strcmp(json_string_value(json_array_get(list, i)), name))
			idx = (int)i;
	json_decref(list);
	return idx;
}

START_TEST(github_archive_keeps_push_commits_and_retries_late_files)
{
	const char *data = fresh_dir("examples-gh-data");
	char out[4096], p_data[4200], p_out[4200], *run, *state, *csv, *attempt, *w;
	long rows = 0;
	size_t len;
	int idx;
	json_t *res;

	if (feature_missing(EXAMPLES "/github_archive.yaml", "route:"))
		return;
	for (int i = 0; i < GH_FILES; i++)
		if (i != GH_LATE)
			rows += gh_write(data, i);
	snprintf(out, sizeof(out), "%s/push_commits.csv", fresh_dir("examples-gh-out"));
	snprintf(p_data, sizeof(p_data), "data_dir=%s", data);
	snprintf(p_out, sizeof(p_out), "out=%s", out);
	{
		const char *extra[] = {"-p", "start_date=01-01-2015", "-p", "end_date=02-01-2015",
				       "-p", p_data, "-p", p_out, "-p", SCRIPTS_PARAM, NULL};
		run = submit(EXAMPLES "/github_archive.yaml", extra);
	}
	/* The late file's first attempt fails ("missing file"); it lands before the retry
	 * (retry_delay 5s, as the seed's). */
	{
		int64_t deadline = sl_mono_ms() + e2e_ms(120000);
		int waiting = 0;
		json_t *l = NULL;

		while (!l && sl_mono_ms() < deadline) {
			if (!(l = e2e_task_output(run, "create_list", -1)))
				usleep(100000);
		}
		json_decref(l);
		idx = gh_idx_of(run, "2015-01-02-5.json.gz");
		ck_assert_msg(idx == GH_LATE, "2015-01-02-5.json.gz is item %d of the list", idx);
		while (!waiting && sl_mono_ms() < deadline) {
			char *st = e2e_ti_field(run, "get_github_data", idx, "state");
			waiting = st && !strcmp(st, "RETRY_WAIT");
			free(st);
			state = e2e_run_field(run, "state");
			ck_assert_msg(state && !strcmp(state, "RUNNING"), "run ended %s before the "
				      "late file was retried", state ? state : "?");
			free(state);
			if (!waiting)
				usleep(100000);
		}
		ck_assert_msg(waiting, "the late file's instance never waited for a retry");
	}
	rows += gh_write(data, GH_LATE);
	state = e2e_wait_run_end(run, e2e_ms(180000));
	ck_assert_msg(state && !strcmp(state, "SUCCEEDED"), "run %s ended %s", run,
		      state ? state : "(timeout)");
	free(state);
	attempt = e2e_ti_field(run, "get_github_data", GH_LATE, "attempt");
	ck_assert_msg(attempt && atoi(attempt) >= 2, "late file attempt %s", attempt);
	free(attempt);
	ck_assert_int_eq(atoi(e2e_run_field(run, "tasks_total")), 1 + GH_FILES + 1);

	res = e2e_task_output(run, "to_table", -1);
	ck_assert_int_eq(json_integer_value(json_object_get(res, "rows")), rows);
	ck_assert_int_eq(json_integer_value(json_object_get(res, "files")), GH_FILES);
	json_decref(res);
	csv = read_file(out, &len);
	ck_assert_msg(csv != NULL, "%s was not written", out);
	ck_assert_int_eq(count_lines(csv), rows + 1);
	ck_assert_msg(!strncmp(csv, "user,repo,created_at,message,author\n", 36), "header: %.60s",
		      csv);
	/* hour 7 of day 1: 2 PushEvents (7 % 3 + 1) with 2 commits each */
	ck_assert_msg(strstr(csv, "user7,org/repo1,2015-01-01T07:00:01Z,"
				  "\"fix 7.1, \"\"quoted\"\"\",Author 1\n"),
		      "row of user7 missing");
	ck_assert_msg(strstr(csv, "user29,org/repo0,2015-01-02T05:00:00Z,\"fix 29.1, "
				  "\"\"quoted\"\"\",Author 1\n"),
		      "row of the late file missing");
	ck_assert_msg(!strstr(csv, ",w,") && !strstr(csv, "\nx,"), "non-push rows leaked");
	free(csv);
	/* below the threshold: everything on the default queue's workers */
	for (int i = 0; i < GH_FILES; i += 7) {
		w = ti_worker(run, "get_github_data", i);
		ck_assert_msg(!strncmp(w, "e2e-ex-w", 8), "get_github_data[%d] ran on %s", i, w);
		free(w);
	}
	free(run);
}
END_TEST

START_TEST(github_archive_big_range_goes_to_the_big_queue)
{
	const char *data = fresh_dir("examples-gh-data2");
	const char *wb[] = {"--queue", "big", "--slots", "4", "--id", "e2e-ex-big", "--work-dir",
			    work_dir, NULL};
	char out[4096], p_data[4200], p_out[4200], *run = NULL, *w;
	long rows = 0;
	pid_t big;
	int code;
	json_t *res;

	if (feature_missing(EXAMPLES "/github_archive.yaml", "route:"))
		return;
	for (int i = 0; i < GH_FILES; i++)
		rows += gh_write(data, i);
	snprintf(out, sizeof(out), "%s/push_commits.ndjson", fresh_dir("examples-gh-out2"));
	snprintf(p_data, sizeof(p_data), "data_dir=%s", data);
	snprintf(p_out, sizeof(p_out), "out=%s", out);
	big = e2e_spawn("examples-worker-big", "sluice-worker", wb, NULL);
	ck_assert_int_gt(big, 0);
	{
		/* 48 files > 10: the seed's determine_cluster_type says "coiled" */
		const char *extra[] = {"-p", "start_date=01-01-2015", "-p", "end_date=02-01-2015",
				       "-p", p_data, "-p", p_out, "-p", "big_threshold=10",
				       "-p", SCRIPTS_PARAM, NULL};
		code = submit_wait(EXAMPLES "/github_archive.yaml", extra, &run);
	}
	e2e_stop(big, SIGTERM, 15000);
	ck_assert_msg(code == 0, "github_archive (big) exited %d", code);
	w = ti_worker(run, "create_list", -1);
	ck_assert_msg(!strncmp(w, "e2e-ex-w", 8), "create_list ran on %s", w);
	free(w);
	for (int i = 0; i < GH_FILES; i++) {
		w = ti_worker(run, "get_github_data", i);
		ck_assert_msg(!strcmp(w, "e2e-ex-big"), "get_github_data[%d] ran on %s, not on the "
							"big queue's worker",
			      i, w);
		free(w);
	}
	w = ti_worker(run, "to_table", -1);
	ck_assert_msg(!strcmp(w, "e2e-ex-big"), "to_table ran on %s", w);
	free(w);
	res = e2e_task_output(run, "to_table", -1);
	ck_assert_int_eq(json_integer_value(json_object_get(res, "rows")), rows);
	ck_assert_str_eq(json_string_value(json_object_get(res, "format")), "ndjson");
	json_decref(res);
	free(run);
}
END_TEST

/* ---- taxi_ingest ---- */

static const char *taxi_src, *taxi_out, *taxi_state;

static void taxi_write(const char *name, int n)
{
	char path[4096], body[4096];
	int len = snprintf(body, sizeof(body),
			   "hvfhs_license_num,pickup_datetime,dropoff_datetime,trip_miles\n");

	for (int i = 0; i < n; i++)
		len += snprintf(body + len, sizeof(body) - (size_t)len,
				" hv000%d ,2019-02-01 00:%02d:00,2019-02-01 01:%02d:00,%d.5\n",
				i % 4, i, i, i);
	/* dropped: a negative distance and a row without a licence */
	len += snprintf(body + len, sizeof(body) - (size_t)len,
			"HV0003,2019-02-01 02:00:00,2019-02-01 02:10:00,-1\n"
			",2019-02-01 02:00:00,2019-02-01 02:10:00,3\n");
	snprintf(path, sizeof(path), "%s/%s", taxi_src, name);
	write_file(path, body, (size_t)len);
}

/* Runs taxi_ingest with intent; returns the run id (caller frees) after checking that it
 * SUCCEEDED and processed exactly the files named (NULL-terminated, in name order). */
static char *taxi_run(const char *intent, const char *const *expect)
{
	char p_src[4200], p_out[4200], p_state[4200], *run = NULL;
	const char *extra[] = {"--intent", intent,  "-p", p_src,	 "-p",
			       p_out,	  "-p",	    p_state, "-p", SCRIPTS_PARAM, NULL};
	size_t n = 0;
	json_t *listed;
	int code;

	snprintf(p_src, sizeof(p_src), "source_dir=%s", taxi_src);
	snprintf(p_out, sizeof(p_out), "out_dir=%s", taxi_out);
	snprintf(p_state, sizeof(p_state), "state_dir=%s", taxi_state);
	code = submit_wait(EXAMPLES "/taxi_ingest.yaml", extra, &run);
	ck_assert_msg(code == 0, "taxi_ingest --intent %s exited %d", intent, code);
	while (expect[n])
		n++;
	listed = e2e_task_output(run, "check_for_files", -1);
	ck_assert_msg(json_is_array(listed), "check_for_files output is not a list");
	ck_assert_msg(json_array_size(listed) == n, "%s run listed %zu files, expected %zu",
		      intent, json_array_size(listed), n);
	for (size_t i = 0; i < n; i++) {
		json_t *o = e2e_task_output(run, "process", (int)i);
		ck_assert_msg(json_is_object(o), "process[%zu] has no output", i);
		ck_assert_str_eq(json_string_value(json_object_get(o, "name")), expect[i]);
		ck_assert_int_eq(json_integer_value(json_object_get(o, "dropped")), 2);
		json_decref(o);
	}
	ck_assert_msg(!e2e_ti_field(run, "process", (int)n, "state"),
		      "a process instance too many");
	json_decref(listed);
	return run;
}

START_TEST(taxi_ingest_processes_new_files_and_honours_intents)
{
	char path[4096], *run, *clean, *cursor;
	size_t len;
	json_t *c;

	taxi_src = fresh_dir("examples-taxi-in");
	taxi_out = fresh_dir("examples-taxi-out");
	taxi_state = fresh_dir("examples-taxi-state");
	if (feature_missing(EXAMPLES "/taxi_ingest.yaml", "schedule:"))
		return;
	taxi_write("fhvhf_ignored.csv", 1); /* does not match the pattern */
	taxi_write("fhvhv_tripdata_2019-02.csv", 5);
	taxi_write("fhvhv_tripdata_2019-03.csv", 3);
	{
		const char *both[] = {"fhvhv_tripdata_2019-02.csv", "fhvhv_tripdata_2019-03.csv",
				      NULL};
		free(taxi_run("normal", both));
	}
	snprintf(path, sizeof(path), "%s/fhvhv_tripdata_2019-02.csv", taxi_out);
	clean = read_file(path, &len);
	ck_assert_msg(clean != NULL, "no cleaned file %s", path);
	{
		const char *head = "hvfhs_license_num,pickup_datetime,dropoff_datetime,trip_miles\n"
				   "HV0000,2019-02-01T00:00:00,2019-02-01T01:00:00,0.50\n";
		ck_assert_msg(!strncmp(clean, head, strlen(head)), "cleaned file: %.1000s", clean);
	}
	ck_assert_int_eq(count_lines(clean), 1 + 5);
	free(clean);
	snprintf(path, sizeof(path), "%s/fhvhf_ignored.csv", taxi_out);
	ck_assert_int_ne(access(path, F_OK), 0);

	/* nothing new: nothing processed, and the run still succeeds */
	{
		const char *none[] = {NULL};
		run = taxi_run("normal", none);
		c = e2e_task_output(run, "commit", -1);
		ck_assert_int_eq(json_integer_value(json_object_get(c, "committed")), 0);
		json_decref(c);
		free(run);
	}
	/* a new file (first by name): only it */
	taxi_write("fhvhv_tripdata_2019-01.csv", 4);
	{
		const char *jan[] = {"fhvhv_tripdata_2019-01.csv", NULL};
		free(taxi_run("normal", jan));
	}
	/* reprocess: all of them */
	{
		const char *all[] = {"fhvhv_tripdata_2019-01.csv", "fhvhv_tripdata_2019-02.csv",
				     "fhvhv_tripdata_2019-03.csv", NULL};
		free(taxi_run("reprocess", all));
	}
	/* test_subset: the first file only, and the cursor stays as it was */
	snprintf(path, sizeof(path), "%s/cursor.json", taxi_state);
	cursor = read_file(path, &len);
	ck_assert_ptr_nonnull(cursor);
	taxi_write("fhvhv_tripdata_2019-04.csv", 2);
	{
		const char *first[] = {"fhvhv_tripdata_2019-01.csv", NULL};
		free(taxi_run("test_subset", first));
	}
	clean = read_file(path, &len);
	ck_assert_str_eq(clean, cursor);
	free(clean);
	free(cursor);
	/* and the file that arrived meanwhile is still new for a normal run */
	{
		const char *apr[] = {"fhvhv_tripdata_2019-04.csv", NULL};
		free(taxi_run("normal", apr));
	}
}
END_TEST

START_TEST(scheduled_examples_validate)
{
	const char *files[] = {EXAMPLES "/taxi_ingest.yaml",
			       EXAMPLES "/scheduled/diamond_scheduled.yaml"};

	for (size_t i = 0; i < 2; i++) {
		const char *args[] = {"flows", "validate", files[i], NULL};
		char *out = NULL;

		if (feature_missing(files[i], "schedule:"))
			continue;
		ck_assert_int_eq(e2e_cli(&out, NULL, args), 0);
		ck_assert_msg(out && strstr(out, ": ok (flow "), "validate: %.1000s",
			      out ? out : "");
		free(out);
	}
}
END_TEST

/* ---- CLI: watch and status ---- */

START_TEST(watch_follows_a_run_to_its_end)
{
	const char *extra[] = {"-p", "n=30", "-p", "sleep=0.5", NULL};
	char *run = submit(EXAMPLES "/diamond.yaml", extra), *out = NULL, *last, *nl;
	const char *args[] = {"watch", run, "--interval", "200ms", NULL};
	const char *jargs[] = {"watch", run, "--json", NULL};
	json_t *doc, *tasks;
	json_error_t jerr;

	ck_assert_int_eq(e2e_cli(&out, NULL, args), 0);
	/* plain lines (no terminal): several while it ran, the final counts, the verdict */
	ck_assert_msg(count_lines(out) >= 3, "watch printed: %.1000s", out);
	ck_assert_msg(strstr(out, "RUNNING "), "no progress line: %.1000s", out);
	ck_assert_msg(strstr(out, "SUCCEEDED 91/91 tasks done, 0 failed, 0 running"),
		      "no final line: %.1000s", out);
	ck_assert_msg(strstr(out, "| inc 30/30; dec 30/30; add 30/30; total 1/1"),
		      "no per-task counts: %.1000s", out);
	ck_assert_msg(strstr(out, "run ") && strstr(out, " SUCCEEDED in "), "verdict: %.1000s",
		      out);
	free(out);
	out = NULL;
	/* --json on an ended run: one final object */
	ck_assert_int_eq(e2e_cli(&out, NULL, jargs), 0);
	for (last = out; (nl = strchr(last, '\n')) && nl[1]; last = nl + 1)
		;
	doc = json_loads(last, JSON_DISABLE_EOF_CHECK, &jerr);
	ck_assert_msg(doc != NULL, "watch --json: %s in %.1000s", jerr.text, out);
	ck_assert_str_eq(json_string_value(json_object_get(doc, "state")), "SUCCEEDED");
	ck_assert(json_is_true(json_object_get(doc, "final")));
	ck_assert_int_eq(json_integer_value(json_object_get(doc, "done")), 91);
	tasks = json_object_get(doc, "tasks");
	ck_assert_int_eq(json_array_size(tasks), 4);
	ck_assert_str_eq(elem_str(tasks, 2, "task"), "add");
	ck_assert_int_eq(elem_int(tasks, 2, "done"), 30);
	json_decref(doc);
	free(out);
	free(run);
}
END_TEST

/* On a terminal: bars redrawn in place (cursor up over the previous view), a line per task. */
START_TEST(watch_draws_bars_on_a_terminal)
{
	const char *extra[] = {"-p", "n=10", "-p", "sleep=0.5", NULL};
	char *run = submit(EXAMPLES "/diamond.yaml", extra), bin[4096];
	const char *argv[] = {bin, "watch", run, "--interval", "200ms", NULL};
	posix_spawn_file_actions_t fa;
	size_t cap = 1 << 20, len = 0;
	char *buf = malloc(cap);
	int master, slave, status = 0;
	int64_t deadline = sl_mono_ms() + e2e_ms(120000);
	pid_t pid;

	ck_assert_ptr_nonnull(buf);
	snprintf(bin, sizeof(bin), "%s/sluice", SLUICE_BIN_DIR);
	ck_assert_int_eq(openpty(&master, &slave, NULL, NULL, NULL), 0);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, slave, 1);
	posix_spawn_file_actions_adddup2(&fa, slave, 2);
	posix_spawn_file_actions_addclose(&fa, master);
	posix_spawn_file_actions_addclose(&fa, slave);
	ck_assert_int_eq(posix_spawn(&pid, bin, &fa, NULL, (char *const *)argv, environ), 0);
	posix_spawn_file_actions_destroy(&fa);
	close(slave);
	while (sl_mono_ms() < deadline && len + 1 < cap) {
		struct pollfd pfd = {.fd = master, .events = POLLIN};
		ssize_t n;

		if (poll(&pfd, 1, 500) <= 0)
			continue;
		n = read(master, buf + len, cap - 1 - len);
		if (n <= 0)
			break; /* EIO: the watcher exited and the terminal closed */
		len += (size_t)n;
	}
	buf[len] = '\0';
	close(master);
	waitpid(pid, &status, 0);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "watch on a tty: status %d",
		      status);
	/* six lines (run, overall bar, four tasks) redrawn at least once */
	ck_assert_msg(strstr(buf, "\033[6A"), "no redraw in: %.2000s", buf);
	ck_assert_msg(strstr(buf, "[####################] 31/31 tasks done  0 failed  0 running"),
		      "no full overall bar in: %.2000s", buf);
	ck_assert_msg(strstr(buf, "  add    [####################]    10/10"),
		      "no add bar in: %.2000s", buf);
	ck_assert_msg(strstr(buf, " SUCCEEDED in "), "no verdict in: %.2000s", buf);
	free(buf);
	free(run);
}
END_TEST

START_TEST(watch_exit_codes_match_submit_wait)
{
	char *run = submit(E2E_FLOWS "/always_fail.yaml", NULL), *out = NULL, *err = NULL;
	const char *args[] = {"watch", run, NULL};
	const char *unknown[] = {"watch", "r-0000000000000000nope", NULL};
	const char *usage[] = {"watch", NULL};
	char *slow;

	ck_assert_int_eq(e2e_cli(&out, NULL, args), 1);
	ck_assert_msg(strstr(out, "FAILED"), "watch of a failing run: %.1000s", out);
	free(out);
	out = NULL;
	ck_assert_int_eq(e2e_cli(&out, &err, unknown), 2);
	ck_assert_msg(err && strstr(err, "no run"), "unknown run: %s", err ? err : "");
	free(out);
	free(err);
	out = err = NULL;
	ck_assert_int_eq(e2e_cli(&out, &err, usage), 2);
	free(out);
	free(err);
	out = err = NULL;
	slow = submit(E2E_FLOWS "/slow.yaml", NULL);
	{
		const char *targs[] = {"watch", slow, "--timeout", "1s", NULL};
		ck_assert_int_eq(e2e_cli(&out, &err, targs), 5);
		ck_assert_msg(err && strstr(err, "timed out"), "timeout: %s", err ? err : "");
	}
	free(out);
	free(err);
	free(e2e_wait_run_end(slow, e2e_ms(60000)));
	free(slow);
	free(run);
}
END_TEST

START_TEST(status_reads_instances_without_scanning)
{
	const char *extra[] = {"-p", "n=1", NULL};
	const char *extra60[] = {"-p", "n=60", NULL};
	char *run = NULL, *out = NULL;
	json_t *doc, *tasks;
	json_error_t jerr;
	redisReply *r;
	long long scans_before, scans_after;

	/* n=1: a map over one element (index 0) next to an unmapped task (index -1) */
	ck_assert_int_eq(submit_wait(EXAMPLES "/diamond.yaml", extra, &run), 0);
	r = sl_state_command(e2e_state(), "INFO commandstats");
	ck_assert_ptr_nonnull(r);
	scans_before = strstr(r->str, "cmdstat_scan:calls=")
			       ? atoll(strstr(r->str, "cmdstat_scan:calls=") + 19)
			       : 0;
	freeReplyObject(r);
	{
		const char *args[] = {"status", run, "--json", NULL};
		ck_assert_int_eq(e2e_cli(&out, NULL, args), 0);
	}
	r = sl_state_command(e2e_state(), "INFO commandstats");
	scans_after = strstr(r->str, "cmdstat_scan:calls=")
			      ? atoll(strstr(r->str, "cmdstat_scan:calls=") + 19)
			      : 0;
	freeReplyObject(r);
	ck_assert_msg(scans_after == scans_before, "status ran SCAN (%lld -> %lld)", scans_before,
		      scans_after);
	doc = json_loads(out, 0, &jerr);
	ck_assert_msg(doc != NULL, "status --json: %s", jerr.text);
	tasks = json_object_get(doc, "tasks");
	ck_assert_int_eq(json_array_size(tasks), 4);
	for (size_t i = 0; i < 3; i++)
		ck_assert_int_eq(elem_int(tasks, i, "index"),
				 0);
	ck_assert_str_eq(elem_str(tasks, 3, "task"),
			 "total");
	ck_assert_int_eq(elem_int(tasks, 3, "index"), -1);
	ck_assert_int_eq(elem_int(tasks, 3, "output"), 0);
	json_decref(doc);
	free(out);
	free(run);
	out = NULL;

	ck_assert_int_eq(submit_wait(EXAMPLES "/diamond.yaml", extra60, &run), 0);
	{
		const char *args[] = {"status", run, "--json", NULL};
		ck_assert_int_eq(e2e_cli(&out, NULL, args), 0);
	}
	doc = json_loads(out, 0, &jerr);
	ck_assert_msg(doc != NULL, "status --json: %s", jerr.text);
	tasks = json_object_get(doc, "tasks");
	ck_assert_int_eq(json_array_size(tasks), 181);
	ck_assert_int_eq(elem_int(tasks, 119, "index"), 59);
	ck_assert_str_eq(elem_str(tasks, 119, "task"), "dec");
	ck_assert_int_eq(elem_int(tasks, 180, "output"),
			 60 * 59);
	json_decref(doc);
	free(out);
	out = NULL;
	{
		const char *args[] = {"status", run, NULL};
		ck_assert_int_eq(e2e_cli(&out, NULL, args), 0);
		ck_assert_msg(strstr(out, "... 40 more: 40 SUCCEEDED"), "table: %.1000s", out);
	}
	free(out);
	free(run);
}
END_TEST

/* Last, so that the planner (which loads examples/scheduled) has been up for a while: the
 * every-minute diamond fires on its own. */
START_TEST(diamond_scheduled_fires_every_minute)
{
	const char *args[] = {"runs",	"--flow",  "diamond_scheduled", "--json",
			      "--limit", "5", NULL};
	int64_t deadline = sl_mono_ms() + e2e_ms(150000);
	int found = 0;

	if (feature_missing(EXAMPLES "/scheduled/diamond_scheduled.yaml", "schedule:"))
		return;
	while (!found && sl_mono_ms() < deadline) {
		char *out = NULL;
		json_t *doc;

		ck_assert_int_eq(e2e_cli(&out, NULL, args), 0);
		doc = json_loads(out, 0, NULL);
		for (size_t i = 0; doc && i < json_array_size(doc); i++) {
			const char *st = json_string_value(json_object_get(json_array_get(doc, i),
									   "state"));
			if (st && !strcmp(st, "SUCCEEDED")) {
				ck_assert_int_eq(json_integer_value(json_object_get(
							 json_array_get(doc, i), "tasks_total")),
						 31);
				found = 1;
			}
		}
		json_decref(doc);
		free(out);
		if (!found)
			sleep(2);
	}
	ck_assert_msg(found, "no scheduled diamond run succeeded within 150 s");
}
END_TEST

int main(void)
{
	const TTest *const tests[] = {
		scheduled_examples_validate,
		status_reads_instances_without_scanning,
		watch_follows_a_run_to_its_end,
		watch_draws_bars_on_a_terminal,
		watch_exit_codes_match_submit_wait,
		download_images_fetches_twelve_months,
		github_archive_keeps_push_commits_and_retries_late_files,
		github_archive_big_range_goes_to_the_big_queue,
		taxi_ingest_processes_new_files_and_honours_intents,
		diamond_scheduled_fires_every_minute,
		NULL,
	};

	return e2e_run_suite("e2e_examples", start_services, stop_services, 300, tests);
}
